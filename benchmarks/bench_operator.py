"""Operator figures on a real kube-apiserver and etcd: reconcile latency, end-to-end time, memory.

Starts the control plane the tests use (``KUBEBUILDER_ASSETS`` or ``bash .ci/tools.sh assets``) and the
operator as its own process in local mode, then applies Datasets one at a time and measures:

- apply -> job launched: from ``kubectl apply`` returning to ``status.job`` naming a launched job;
- apply -> Ready: until the first version is committed and reported;
- baseline: ``kubectl apply`` of a ConfigMap until ``kubectl get`` reads it back, the API round trip no
  operator can beat; the ratio says how much the operator adds on top of it;
- operator memory: resident set size (VmRSS, VmHWM) of the operator process, idle and after the runs.

    .venv/bin/python benchmarks/bench_operator.py [--datasets 5] [--images 8] [--out figures.json]

It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

from support.control_plane import ControlPlane  # noqa: E402
from support.operator_process import condition, get_object, start_operator, stop_operator, wait_for  # noqa: E402

NAMESPACE = "loupe-bench"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page")


def _rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def _apply(cp: ControlPlane, folder: Path, obj: dict[str, Any]) -> None:
    path = folder / f"{obj['kind']}-{obj['metadata']['name']}.json"
    path.write_text(json.dumps(obj))
    cp.kubectl("apply", "-f", str(path), check=True)


def _poll(check: Any, interval: float = 0.05, timeout: float = 300.0) -> Any:
    return wait_for("the benchmark condition", check, timeout=timeout, interval=interval)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", type=int, default=5, help="Datasets applied one after another")
    parser.add_argument("--images", type=int, default=8, help="photos in the source folder")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="loupe-bench-operator-"))
    images = work / "images"
    images.mkdir()
    for i in range(args.images):
        photo = getattr(skdata, PHOTOS[i % len(PHOTOS)])()
        Image.fromarray(photo[:, ::-1] if i >= len(PHOTOS) else photo).save(images / f"{i:03d}.png")

    with ControlPlane() as cp:
        cp.kubectl("apply", "-f", str(REPO / "crds"), check=True)
        cp.wait_crds_established("datasets.loupe.dev", "ingestsources.loupe.dev")
        cp.kubectl("create", "namespace", NAMESPACE, check=True)

        baseline: list[float] = []
        for i in range(args.datasets):
            started = time.monotonic()
            _apply(cp, work, {"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": f"probe-{i}", "namespace": NAMESPACE}, "data": {"k": "v"}})  # fmt: skip
            _poll(lambda i=i: get_object(cp, "configmap", f"probe-{i}", NAMESPACE))
            baseline.append(time.monotonic() - started)

        operator = start_operator(
            cp.kubeconfig_path, work, "operator.log", [NAMESPACE], LOUPE_SOURCE_POLL_SECONDS="2"
        )
        try:
            time.sleep(5)  # let it start and settle
            idle = _rss_kib(operator.pid)
            _apply(cp, work, {"apiVersion": "loupe.dev/v1alpha1", "kind": "IngestSource",
                              "metadata": {"name": "photos", "namespace": NAMESPACE},
                              "spec": {"filesystem": {"path": str(images)}}})  # fmt: skip
            _poll(
                lambda: (get_object(cp, "ingestsource", "photos", NAMESPACE).get("status") or {}).get(
                    "lastScan"
                )
            )
            launch: list[float] = []
            ready: list[float] = []
            for i in range(args.datasets):
                name = f"bench-{i}"
                started = time.monotonic()
                _apply(cp, work, {"apiVersion": "loupe.dev/v1alpha1", "kind": "Dataset",
                                  "metadata": {"name": name, "namespace": NAMESPACE},
                                  "spec": {"sources": [{"name": "photos"}]}})  # fmt: skip
                _poll(
                    lambda name=name: (get_object(cp, "dataset", name, NAMESPACE).get("status") or {}).get(
                        "job"
                    )
                )
                launch.append(time.monotonic() - started)
                _poll(lambda name=name: condition(get_object(cp, "dataset", name, NAMESPACE), "Ready").get("status")
                      == "True", interval=0.2)  # fmt: skip
                ready.append(time.monotonic() - started)
            busy = _rss_kib(operator.pid)
        finally:
            stop_operator(operator)

    figures = {
        "datasets": args.datasets,
        "images": args.images,
        "baseline_api_round_trip_s": statistics.median(baseline),
        "apply_to_job_launch_s": {"median": statistics.median(launch), "max": max(launch)},
        "apply_to_ready_s": {"median": statistics.median(ready), "max": max(ready)},
        "launch_latency_ratio_to_api_round_trip": statistics.median(launch) / statistics.median(baseline),
        "operator_rss_mib": {
            "idle": idle["VmRSS"] / 1024,
            "after_runs": busy["VmRSS"] / 1024,
            "peak": busy["VmHWM"] / 1024,
        },
    }
    print(f"API round trip (kubectl apply -> get), median  {figures['baseline_api_round_trip_s']:.3f} s")
    print(
        f"apply -> job launched, median (max)           {statistics.median(launch):.3f} s ({max(launch):.3f} s)"
    )
    print(
        f"  ratio to the API round trip                 {figures['launch_latency_ratio_to_api_round_trip']:.2f}x"
    )
    print(
        f"apply -> Ready with 1.0.0, median (max)       {statistics.median(ready):.2f} s ({max(ready):.2f} s)"
    )
    print(f"operator RSS idle / after {args.datasets} runs / peak      "
          f"{idle['VmRSS'] / 1024:.0f} / {busy['VmRSS'] / 1024:.0f} / {busy['VmHWM'] / 1024:.0f} MiB")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
