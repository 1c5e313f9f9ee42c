"""A store that is full, read-only, refuses access or is not there: one line naming where and why.

Real file systems (a 2 MiB tmpfs, remounted read-only), a real MinIO, a closed port, and the real
``loupe`` command. Before, each of these printed a traceback of 30 to 130 lines without the path, left
partial ``.tmp-*`` files behind, and a refused connection took many seconds of retries.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from loupe_storage.store import LocalStore, StoreError

REPO = Path(__file__).resolve().parents[2]
LOUPE = REPO / ".venv" / "bin" / "loupe"

SPEC = """\
apiVersion: loupe.dev/v1alpha1
kind: IngestSource
metadata: {name: cams}
spec:
  filesystem: {path: ./images}
---
apiVersion: loupe.dev/v1alpha1
kind: Dataset
metadata: {name: parts}
spec:
  sources: [{name: cams}]
"""

STORE_COMMANDS = [
    ["versions", "parts"],
    ["show", "parts"],
    ["diff", "parts@1.0.0", "parts@1.1.0"],
    ["lineage", "parts@1.0.0"],
    ["search", "parts", "--where", "width > 1"],
    ["report", "parts", "--out", "report.html"],
    ["queue", "parts"],
    ["export", "parts", "--out", "exported"],
]


def _image(path: Path, seed: int, side: int = 64) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


def _project(tmp_path: Path, images: int = 3) -> Path:
    (tmp_path / "spec.yaml").write_text(SPEC)
    for i in range(images):
        _image(tmp_path / "images" / f"{i}.png", i)
    return tmp_path


def loupe(
    *args: str, cwd: Path, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, str(LOUPE), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def run(project: Path, store: Path | str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return loupe(
        "run", "-f", "spec.yaml", "--store", str(store), "--executor", "inline", cwd=project, **kwargs
    )


def one_line_error(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The failure printed exactly one line, with exit code 1, no traceback, naming what is expected."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*")]


def current_version(project: Path, store: Path | str) -> str:
    shown = loupe("show", "parts", "--store", str(store), "--json", cwd=project)
    assert shown.returncode == 0, shown.stderr
    return str(json.loads(shown.stdout)["version"])


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a store that fills up. Skipped where mounting is not permitted."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_in_one_line_and_keeps_the_previous_version(tmp_path: Path, tmpfs: Path) -> None:
    project = _project(tmp_path)
    store = tmpfs / "store"
    first = run(project, store)
    assert first.returncode == 0, first.stderr
    assert "created 1.0.0" in first.stdout
    # a 3.5 MiB image that cannot compress: its blob does not fit in what is left of 2 MiB
    _image(project / "images" / "huge.png", 99, side=1100)
    assert (project / "images" / "huge.png").stat().st_size > 3 << 20
    full = run(project, store)
    line = one_line_error(full, "no space left on device (ENOSPC)", str(store / "blobs" / "sha256"))
    assert line.startswith("error: parts: cannot write ")
    assert temp_files(tmpfs) == []  # the partial blob was removed
    assert current_version(project, store) == "1.0.0"
    listed = json.loads(loupe("versions", "parts", "--store", str(store), "--json", cwd=project).stdout)
    assert [v["version"] for v in listed] == ["1.0.0"]


def test_a_read_only_store_fails_in_one_line_and_stays_readable(tmp_path: Path, tmpfs: Path) -> None:
    project = _project(tmp_path)
    store = tmpfs / "store"
    assert run(project, store).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    _image(project / "images" / "new.png", 42)
    one_line_error(run(project, store), "read-only file system (EROFS)", str(store))
    assert current_version(project, store) == "1.0.0"
    # a fresh store on a read-only disk: the folder cannot be created
    one_line_error(run(project, tmpfs / "other"), "cannot create folder", "(EROFS)", str(tmpfs / "other"))


def test_a_store_without_write_permission_fails_in_one_line(tmp_path: Path) -> None:
    project = _project(tmp_path)
    store = tmp_path / "store"
    assert run(project, store).returncode == 0
    _image(project / "images" / "new.png", 42)
    blobs = store / "blobs" / "sha256"
    modes = {p: p.stat().st_mode for p in [blobs, *blobs.iterdir()]}
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root ignores modes: drop the capabilities that let it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot take away write permission")
        prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")
    try:
        for path in modes:
            path.chmod(0o555)
        one_line_error(run(project, store, prefix=prefix), "permission denied (EACCES)", str(blobs))
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert temp_files(store) == []
    assert current_version(project, store) == "1.0.0"


def test_stale_temp_files_are_swept_at_the_start_of_a_run_and_fresh_ones_kept(tmp_path: Path) -> None:
    project = _project(tmp_path)
    store = tmp_path / "store"
    assert run(project, store).returncode == 0
    folder = store / "blobs" / "sha256" / "00"
    folder.mkdir(parents=True, exist_ok=True)
    stale, fresh, other = folder / ".tmp-killed", store / ".tmp-concurrent", folder / "not-a-temp"
    for path in (stale, fresh, other):
        path.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    os.utime(other, (two_hours_ago, two_hours_ago))
    again = run(project, store)
    assert again.returncode == 0, again.stderr
    assert not stale.exists()  # left by a killed process
    assert fresh.exists()  # may belong to a run going on now
    assert other.exists()  # not a temp file at all


def test_local_store_write_failures_name_the_path_and_remove_the_temp_file(tmpfs: Path) -> None:
    store = LocalStore(tmpfs / "s")
    store.put("small", b"x" * 1000)
    with pytest.raises(StoreError, match=r"cannot write .*/s/big: no space left on device \(ENOSPC\)"):
        store.put("big", b"\0" * (3 << 20))
    with pytest.raises(StoreError, match=r"cannot write .*/s/blobs/big: no space left on device"):
        store.put_if_absent("blobs/big", os.urandom(3 << 20))
    assert temp_files(tmpfs) == [] and not store.exists("big")
    assert store.get("small") == b"x" * 1000
    os.utime(tmpfs / "s" / "small", (0, 0))
    (tmpfs / "s" / ".tmp-old").write_bytes(b"")
    os.utime(tmpfs / "s" / ".tmp-old", (0, 0))
    assert store.sweep_temp() == 1 and store.exists("small")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


S3_DOWN_ENV = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_EC2_METADATA_DISABLED": "true"}


def test_s3_endpoint_down_fails_in_one_line_within_seconds(tmp_path: Path) -> None:
    project = _project(tmp_path, images=1)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    done = run(project, "s3://bucket/x", env={**S3_DOWN_ENV, "AWS_ENDPOINT_URL": endpoint})
    elapsed = time.monotonic() - started
    one_line_error(done, endpoint, "bucket bucket", "cannot connect")
    assert elapsed < 25, f"took {elapsed:.1f}s"  # interpreter start included; retries are bounded


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=lambda c: c[0])
def test_every_store_command_fails_in_one_line_when_s3_is_down(tmp_path: Path, command: list[str]) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    done = loupe(*command, "--store", "s3://bucket/x", cwd=tmp_path,
                 env={**S3_DOWN_ENV, "AWS_ENDPOINT_URL": endpoint})  # fmt: skip
    one_line_error(done, endpoint, "bucket")


def test_store_commands_on_a_missing_version_exit_1_in_one_line(tmp_path: Path) -> None:
    project = _project(tmp_path)
    store = tmp_path / "store"
    assert run(project, store).returncode == 0
    missing = [["versions", "other"], ["show", "parts@9.9.9"], ["diff", "parts@1.0.0", "parts@9.9.9"],
               ["lineage", "parts@9.9.9"], ["search", "parts@9.9.9", "--where", "width > 1"],
               ["report", "parts@9.9.9"], ["queue", "parts@9.9.9"], ["export", "parts@9.9.9", "--out", "x"]]  # fmt: skip
    for command in missing:
        named = "other" if command[0] == "versions" else "9.9.9"
        one_line_error(loupe(*command, "--store", str(store), cwd=project), named)
    usage = loupe("show", "--store", str(store), cwd=project)  # no DATASET: a usage error
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_s3_with_wrong_or_missing_credentials_fails_in_one_line(tmp_path: Path, minio: Any) -> None:
    minio.make_bucket("guarded")
    project = _project(tmp_path, images=1)
    env = {"AWS_ENDPOINT_URL": minio.endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
    wrong_key = run(project, "s3://guarded/x", env={**env, "AWS_ACCESS_KEY_ID": "nobody",
                                                      "AWS_SECRET_ACCESS_KEY": "wrong-secret"})  # fmt: skip
    one_line_error(wrong_key, "S3 denied", "guarded", minio.endpoint, "InvalidAccessKeyId")
    wrong_secret = run(project, "s3://guarded/x", env={**env, "AWS_ACCESS_KEY_ID": minio.access_key,
                                                         "AWS_SECRET_ACCESS_KEY": "wrong-secret"})  # fmt: skip
    one_line_error(wrong_secret, "S3 denied", "guarded", "SignatureDoesNotMatch")
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    nothing = subprocess.run(
        [str(LOUPE), "run", "-f", "spec.yaml", "--store", "s3://guarded/x", "--executor", "inline"],
        cwd=project, capture_output=True, text=True, timeout=120,
        env={**bare, **env, "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
             "AWS_CONFIG_FILE": str(tmp_path / "none")},
    )  # fmt: skip
    one_line_error(nothing, "no S3 credentials", "guarded", minio.endpoint)
