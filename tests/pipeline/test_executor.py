"""Where per-object work runs: the default (auto) picks this process for a few objects, a local worker
pool for more and Ray only when a cluster is given; every executor gives the same version."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from loupe_storage.store import LocalStore
from loupe_storage.versions import list_versions
from loupe_workers.compute import executor as executors
from loupe_workers.compute.executor import (
    AutoExecutor,
    InlineExecutor,
    PoolExecutor,
    RayExecutor,
    make_executor,
    pool_workers,
)
from loupe_workers.ingest.demo import DemoFile
from loupe_workers.pipeline.run import run_dataset
from support.runs import request, rows_of


def test_pool_executor_matches_inline(corpus: tuple[Path, list[DemoFile]], tmp_path: Path) -> None:
    images, _ = corpus
    inline = run_dataset(request(images, str(tmp_path / "a")), executor=InlineExecutor())
    pooled = run_dataset(request(images, str(tmp_path / "b")), executor=PoolExecutor(workers=2, chunk=3))
    assert inline.stats == pooled.stats and inline.stats.processed > 30
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    assert rows_of(a, list_versions(a, "defects")[0]) == rows_of(b, list_versions(b, "defects")[0])


def test_auto_uses_this_process_for_a_few_objects_and_the_pool_for_more(
    corpus: tuple[Path, list[DemoFile]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, _ = corpus
    auto = make_executor("auto")
    assert isinstance(auto, AutoExecutor) and auto.ray is None
    run_dataset(request(images, str(tmp_path / "a")), executor=auto)
    assert isinstance(auto.chosen, InlineExecutor)  # 30-odd objects: no worker start-up
    monkeypatch.setattr(executors, "POOL_MIN_OBJECTS", 10)
    monkeypatch.setattr(executors, "POOL_MIN_CPUS", 64)  # a small machine: still this process
    run_dataset(request(images, str(tmp_path / "b")), executor=auto)
    assert isinstance(auto.chosen, InlineExecutor)
    monkeypatch.setattr(executors, "POOL_MIN_CPUS", 1)
    run_dataset(request(images, str(tmp_path / "c")), executor=auto)
    assert isinstance(auto.chosen, PoolExecutor)


def test_auto_uses_ray_when_a_cluster_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    auto = make_executor("auto")
    assert isinstance(auto, AutoExecutor) and isinstance(auto.ray, RayExecutor)
    assert auto.ray.address == "ray://head:10001"
    with pytest.raises(ValueError, match="use auto, inline, pool or ray"):
        make_executor("threads")


def test_pool_size_follows_cpus_and_memory() -> None:
    gib = 1 << 30
    assert pool_workers(gib, cpus=16, memory=64 * gib) == 8  # at most 8
    assert pool_workers(gib, cpus=4, memory=64 * gib) == 4
    assert pool_workers(gib, cpus=16, memory=4 * gib) == 2  # 1.5 GiB per worker: one decode + itself
    assert pool_workers(gib, cpus=16, memory=gib) == 1  # never none


def test_an_embedded_ray_keeps_its_token_notice_out_of_the_output() -> None:
    """ray.init starting a local cluster logs that token authentication is on (Ray's default); ensure_ray
    drops that notice, and only it: Ray's authentication warnings still reach every handler. (Ray's own
    functions log it here: starting a Ray only to read its output would take half a minute. The records
    are caught on the logger itself, as whatever handler Ray or an earlier test installed would see them.)"""
    from ray._private.authentication import authentication_token_setup as auth

    assert auth.__name__ == executors.TOKEN_NOTICE_LOGGER
    logger = logging.getLogger(executors.TOKEN_NOTICE_LOGGER)
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect(logging.DEBUG)
    logger.addHandler(handler)
    try:
        executors.quiet_ray_notices()
        executors.quiet_ray_notices()  # once is enough: ensure_ray runs at every Ray executor's start
        auth._warn_token_auth_enabled()  # what ray.init logs when it starts a local cluster
        auth._warn_token_auth_disabled()
    finally:
        logger.removeHandler(handler)
    assert not any(m.startswith("Token authentication is enabled") for m in seen), seen
    assert any(m.startswith("Token authentication is disabled") for m in seen), seen
    assert sum(isinstance(f, executors._DropTokenNotice) for f in logger.filters) == 1
