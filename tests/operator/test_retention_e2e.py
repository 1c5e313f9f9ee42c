"""spec.retention on a real kube-apiserver and etcd: the operator runs a gc job after each new version,
and status, Events and the store say what it expired and freed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from loupe_api.keys import blob_key
from loupe_workers.ingest.demo import DemoFile
from support.cli import loupe
from support.operator_process import E2E_NAMESPACE as NAMESPACE
from support.operator_process import (
    dataset_spec,
    get_object,
    source_spec,
    start_operator,
    stop_operator,
    wait_for,
)
from support.photos import jpeg, photo

NAME = "retained"
DATASET = f"{NAMESPACE}/{NAME}"  # how the operator names the dataset in storage


def specs(images: Path) -> dict[str, Any]:
    source = source_spec("retained-source", images, labels={"format": "folder"})
    dataset = dataset_spec(NAME, "retained-source", retention={"keepLast": 1})
    return {"apiVersion": "v1", "kind": "List", "items": [source, dataset]}


def test_the_operator_collects_after_each_version_and_reports_it(
    cluster: Any, corpus: tuple[Path, list[DemoFile]], tmp_path: Path, operator_log: Path
) -> None:
    images, _ = corpus
    store = tmp_path / "store"
    manifest = tmp_path / "retention.json"
    manifest.write_text(json.dumps(specs(images)))
    operator = start_operator(cluster.kubeconfig_path, tmp_path, operator_log.name, [NAMESPACE])

    def status() -> dict[str, Any]:
        found: dict[str, Any] = get_object(cluster, "dataset", NAME).get("status") or {}
        return found

    def collected_after(version: str) -> dict[str, Any] | None:
        """The retention status once the gc job that followed ``version`` has finished."""
        state: dict[str, Any] = status().get("retention") or {}
        done = state.get("lastVersion") == version and state.get("jobState") in ("Succeeded", "Failed")
        return state if done else None

    def next_version(after: str | None) -> str:
        current: str = wait_for(
            f"a version after {after}",
            lambda: (v := status().get("currentVersion")) != after and v,
            timeout=180,
        )
        return current

    try:
        cluster.kubectl("apply", "-f", str(manifest), check=True)
        first = next_version(None)
        wait_for(f"gc after {first}", lambda: collected_after(first), timeout=120)

        rocket = jpeg(photo("rocket", 320))
        (images / "objects" / "rocket.jpg").write_bytes(
            rocket
        )  # new bytes: the second version alone holds them
        second = next_version(first)
        after_second = wait_for(f"gc after {second}", lambda: collected_after(second), timeout=120)
        assert after_second["jobState"] == "Succeeded" and after_second["expiredVersions"] == [first]
        rocket_blob = store / blob_key(hashlib.sha256(rocket).hexdigest())
        assert rocket_blob.is_file()  # kept: the current version holds it

        (images / "objects" / "rocket.jpg").unlink()
        (images / "objects" / "coffee.jpg").write_bytes(jpeg(photo("coffee", 320)))
        third = next_version(second)
        state = wait_for(f"gc after {third}", lambda: collected_after(third), timeout=120)
        assert state["jobState"] == "Succeeded", state
        assert state["expiredVersions"] == [second] and state["freedBytes"] >= len(rocket), state
        assert f"expired {second}" in state["message"] and "freed" in state["message"]

        events = json.loads(cluster.kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        mine = [e for e in events if e["involvedObject"]["name"] == NAME]
        collected = [e["message"] for e in mine if e["reason"] == "GarbageCollected"]
        assert any(f"expired {second}" in m for m in collected), collected

        versions = store / "datasets" / DATASET / "versions"
        assert sorted(p.stem for p in versions.glob("*.json")) == [third]  # the current one survives
        expired = store / "datasets" / DATASET / "expired"
        assert sorted(p.stem for p in expired.glob("*.json")) == sorted([first, second])
        assert not rocket_blob.exists()  # only the expired second version held it
        shown = loupe("show", f"{DATASET}@{third}", "--store", str(store), "--json")
        assert shown.returncode == 0 and json.loads(shown.stdout)["version"] == third, shown.stderr
        gone = loupe("show", f"{DATASET}@{second}", "--store", str(store))
        assert gone.returncode == 1 and "expired on" in gone.stderr
    finally:
        stop_operator(operator)
