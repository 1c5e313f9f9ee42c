"""A real Kubernetes API server accepts Loupe's generated CRDs, serves them, and enforces their schemas.

The control plane is etcd + kube-apiserver built from the Go module proxy by ``.ci/tools.sh`` (or the
binaries in ``$KUBEBUILDER_ASSETS``, or an existing cluster with ``LOUPE_TEST_USE_EXISTING_CLUSTER=1``),
see ``tests/support/control_plane.py``. Every object is made in a namespace of its own, so the module also
runs against a shared cluster such as kind.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from loupe_api.common import Condition
from loupe_api.crd import all_crds
from loupe_api.dataset import (
    Dataset,
    DatasetSpec,
    DatasetStats,
    DatasetStatus,
    JobStatus,
    VersionSummary,
)
from loupe_api.ingest import IngestSource, IngestSourceSpec, IngestSourceStatus, ScanSummary
from loupe_api.retrain import RetrainPolicy, RetrainPolicySpec, RetrainPolicyStatus, RetrainRun
from support.control_plane import (
    REPO_ROOT,
    ControlPlane,
    ControlPlaneError,
    binary_version,
    find_assets,
    kuberay_crd,
    pinned_kubernetes_version,
)

# The first run on a machine builds Kubernetes (about 10 minutes on 2 cores) inside the first test's
# setup, which may run past the suite's default per-test timeout. Every kubectl call and the server
# start have timeouts of their own, so a hang still fails fast.
pytestmark = [pytest.mark.k8s, pytest.mark.timeout(3600)]

CRD_DIR = REPO_ROOT / "crds"
LOUPE_CRDS = tuple(crd["metadata"]["name"] for crd in all_crds())
API_VERSION = "loupe.dev/v1alpha1"


@pytest.fixture(scope="session")
def k8s() -> Iterator[ControlPlane]:
    with ControlPlane() as control_plane:
        yield control_plane


@pytest.fixture(scope="session")
def namespace(k8s: ControlPlane) -> Iterator[str]:
    name = f"loupe-test-{uuid.uuid4().hex[:8]}"
    k8s.kubectl("create", "namespace", name, check=True)
    yield name
    if k8s.use_existing:  # a started control plane is thrown away whole
        k8s.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="session")
def loupe_crds(k8s: ControlPlane) -> tuple[str, ...]:
    """Loupe's CRDs from crds/, applied the way the README says (``kubectl apply -f crds/``)."""
    k8s.apply(CRD_DIR)
    k8s.wait_crds_established(*LOUPE_CRDS)
    return LOUPE_CRDS


def manifest(kind: str, name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump({"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec})


def get_json(k8s: ControlPlane, *args: str) -> Any:
    return json.loads(k8s.kubectl("get", *args, "-o", "json", check=True).stdout)


# --- the control plane itself ----------------------------------------------------------------------
def test_control_plane_serves_the_pinned_version(k8s: ControlPlane) -> None:
    info = json.loads(k8s.kubectl("version", "-o", "json", check=True).stdout)
    server = info["serverVersion"]["gitVersion"]
    if not k8s.use_existing:
        assert server == binary_version(find_assets() / "kube-apiserver")
        if not os.environ.get("KUBEBUILDER_ASSETS"):
            assert server == pinned_kubernetes_version()
            assert info["clientVersion"]["gitVersion"] == server
        assert k8s.server.startswith("https://127.0.0.1:")
    assert k8s.kubectl("get", "--raw", "/readyz", check=True).stdout.strip() == "ok"
    assert k8s.kubeconfig_path.is_file()


def test_a_failed_start_raises_with_the_server_log(k8s: ControlPlane) -> None:
    if k8s.use_existing:
        pytest.skip("starts its own kube-apiserver")
    broken = ControlPlane(use_existing=False, apiserver_args=["--no-such-flag=1"])
    with pytest.raises(ControlPlaneError, match="kube-apiserver exited with code") as info:
        broken.start()
    assert "unknown flag: --no-such-flag" in str(info.value)
    assert not broken.is_running


def test_authorization_is_rbac(k8s: ControlPlane, namespace: str) -> None:
    """The admin may do anything; a service account without bindings may do nothing."""
    assert k8s.kubectl("auth", "can-i", "create", "customresourcedefinitions").stdout.strip() == "yes"
    nobody = f"system:serviceaccount:{namespace}:nobody"
    denied = k8s.kubectl("auth", "can-i", "list", "pods", "-n", namespace, f"--as={nobody}")
    assert denied.stdout.strip() == "no"


# --- Loupe's CRDs ----------------------------------------------------------------------------------
def test_crds_are_established_and_structural(k8s: ControlPlane, loupe_crds: tuple[str, ...]) -> None:
    for name in loupe_crds:
        crd = get_json(k8s, "customresourcedefinition", name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", (name, crd["status"]["conditions"])
        assert conditions.get("NamesAccepted") == "True", (name, crd["status"]["conditions"])
        assert "NonStructuralSchema" not in conditions, (name, crd["status"]["conditions"])
    resources = k8s.kubectl("api-resources", "--api-group=loupe.dev", "-o", "name", check=True).stdout.split()
    assert sorted(resources) == sorted(loupe_crds)


def test_explain_shows_field_descriptions(k8s: ControlPlane, loupe_crds: tuple[str, ...]) -> None:
    # The OpenAPI document is rebuilt a moment after a CRD is established.
    deadline = time.monotonic() + 30
    while True:
        result = k8s.kubectl("explain", "dataset.spec.qualityGates")
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "GROUP:      loupe.dev" in text
    assert "Quality gates." in text
    assert "blur\t<Object>" in text
    assert "Blurry images." in text
    leaf = k8s.kubectl("explain", "datasets.spec.qualityGates.blur.threshold", check=True).stdout
    assert "below which an image is blurry." in leaf and "Sharpness" in leaf
    assert "<number>" in leaf


def test_minimal_resources_apply_and_list(
    k8s: ControlPlane, loupe_crds: tuple[str, ...], namespace: str
) -> None:
    k8s.apply(
        manifest("IngestSource", "line-a-cameras", {"filesystem": {"path": "./images"}}), namespace=namespace
    )
    k8s.apply(manifest("Dataset", "defects", {"sources": [{"name": "line-a-cameras"}]}), namespace=namespace)

    listing = k8s.kubectl("get", "datasets", "-n", namespace, check=True).stdout.splitlines()
    assert listing[0].split() == ["NAME", "VERSION", "SAMPLES", "READY", "AGE"]
    assert listing[1].split()[0] == "defects"
    sources = k8s.kubectl("get", "ingestsources", "-n", namespace, check=True).stdout.splitlines()
    assert sources[0].split() == ["NAME", "BUCKET", "PATH", "OBJECTS", "READY", "AGE"]
    assert sources[1].split()[:2] == ["line-a-cameras", "./images"]
    # The `loupe` category lists every Loupe resource.
    category = k8s.kubectl("get", "loupe", "-n", namespace, check=True).stdout
    assert "dataset.loupe.dev/defects" in category
    assert "ingestsource.loupe.dev/line-a-cameras" in category

    # What the API server stored (with its defaults) is what the models read.
    stored = Dataset.model_validate(get_json(k8s, "dataset", "defects", "-n", namespace))
    assert [s.name for s in stored.spec.sources] == ["line-a-cameras"]
    source = IngestSource.model_validate(get_json(k8s, "ingestsource", "line-a-cameras", "-n", namespace))
    assert source.spec.filesystem is not None and source.spec.filesystem.path == "./images"


SHORT_NAMES = [
    (crd["spec"]["names"]["plural"], short)
    for crd in all_crds()
    for short in crd["spec"]["names"]["shortNames"]
]


@pytest.mark.parametrize(("plural", "short"), SHORT_NAMES, ids=[short for _, short in SHORT_NAMES])
def test_short_names_are_not_shadowed_by_builtin_resources(
    k8s: ControlPlane, loupe_crds: tuple[str, ...], plural: str, short: str, request: pytest.FixtureRequest
) -> None:
    """kubectl resolves a short name to a built-in resource first: ``ds`` is DaemonSets."""
    result = k8s.kubectl("api-resources", "-o", "wide", check=True)
    owners = [
        line.split()[0] for line in result.stdout.splitlines()[1:] if short in line.split()[1].split(",")
    ]
    assert owners == [plural], f"short name {short} belongs to {owners}"
    explained = k8s.kubectl("explain", short, check=True).stdout
    assert "GROUP:      loupe.dev" in explained


def test_the_quickstart_example_applies(
    k8s: ControlPlane, loupe_crds: tuple[str, ...], namespace: str
) -> None:
    example = REPO_ROOT / "examples" / "01-quickstart" / "loupe.yaml"
    result = k8s.apply(example, namespace=namespace, args=["--dry-run=server"], check=False)
    assert result.returncode == 0, result.stderr


def test_specs_the_models_write_are_accepted(
    k8s: ControlPlane, loupe_crds: tuple[str, ...], namespace: str
) -> None:
    """Specs with every pydantic default filled in, as the operator would write them back, validate."""
    specs: list[tuple[str, dict[str, Any]]] = [
        ("IngestSource", IngestSourceSpec.model_validate({"filesystem": {"path": "/data"}}).to_wire()),
        (
            "IngestSource",
            IngestSourceSpec.model_validate(
                {
                    "s3": {"bucket": "raw-images", "credentialsSecretRef": {"name": "s3"}},
                    "video": {"everyNthFrame": 5},
                    "pollInterval": "5m",
                }
            ).to_wire(),
        ),
        (
            "Dataset",
            DatasetSpec.model_validate({"sources": [{"name": "a", "filter": {"site": "x"}}]}).to_wire(),
        ),
        (
            "Dataset",
            DatasetSpec.model_validate(
                {"sources": [{"name": "a"}], "splits": {"train": 1, "val": 0, "test": 0}}
            ).to_wire(),
        ),
        (
            "RetrainPolicy",
            RetrainPolicySpec.model_validate(
                {"datasetRef": "defects", "action": {"webhook": {"url": "http://x"}}}
            ).to_wire(),
        ),
        (
            "RetrainPolicy",
            RetrainPolicySpec.model_validate(
                {
                    "datasetRef": "defects",
                    "action": {"rayJob": {"entrypoint": "python train.py"}},
                    "cooldown": "1h",
                }
            ).to_wire(),
        ),
    ]
    docs = [
        {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": f"full-{i}"}, "spec": spec}
        for i, (kind, spec) in enumerate(specs)
    ]
    text = yaml.safe_dump_all(docs)
    result = k8s.apply(text, namespace=namespace, args=["--validate=strict"], check=False)
    assert result.returncode == 0, result.stderr
    policy = RetrainPolicy.model_validate(get_json(k8s, "retrainpolicy", "full-4", "-n", namespace))
    assert policy.spec.action.webhook is not None


def test_status_the_operator_writes_is_accepted_and_shown(
    k8s: ControlPlane, loupe_crds: tuple[str, ...], namespace: str
) -> None:
    """Fully populated statuses, as the models serialise them, pass the status subresource's schema."""
    now = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)
    ready = Condition(type="Ready", status="True", reason="Committed", message="ok", last_transition_time=now)
    dataset_status = DatasetStatus(
        observed_generation=1,
        conditions=[ready],
        current_version="1.2.0",
        samples=42,
        versions=[
            VersionSummary(
                version="1.2.0", created=now, manifest_uri="s3://b/v/1.2.0.parquet", samples=42, digest="d"
            )
        ],
        stats=DatasetStats(
            scanned=50, samples=42, accepted=40, rejected={"corrupt": 2}, splits={"train": 34}
        ),
        job=JobStatus(id="run-1", mode="local", state="Succeeded", start_time=now, completion_time=now),
        lineage_uri="s3://b/lineage/1.2.0.json",
    )
    source_status = IngestSourceStatus(
        observed_generation=1,
        conditions=[ready],
        last_scan=ScanSummary(time=now, objects=50, bytes=123456, listing_digest="abc"),
    )
    policy_status = RetrainPolicyStatus(
        observed_generation=1,
        conditions=[ready],
        runs=[
            RetrainRun(
                name="r1", dataset_version="1.2.0", state="Running", start_time=now, metrics={"map": 0.5}
            )
        ],
    )
    k8s.apply(manifest("IngestSource", "status-src", {"filesystem": {"path": "/data"}}), namespace=namespace)
    k8s.apply(manifest("Dataset", "status-ds", {"sources": [{"name": "status-src"}]}), namespace=namespace)
    k8s.apply(
        manifest(
            "RetrainPolicy", "status-rtp", {"datasetRef": "status-ds", "action": {"command": ["train"]}}
        ),
        namespace=namespace,
    )
    for resource, status in (
        ("dataset/status-ds", dataset_status),
        ("ingestsource/status-src", source_status),
        ("retrainpolicy/status-rtp", policy_status),
    ):
        kind, name = resource.split("/")
        k8s.patch_status(kind, name, namespace, status.to_wire())

    stored = Dataset.model_validate(get_json(k8s, "dataset", "status-ds", "-n", namespace))
    assert stored.status == dataset_status
    assert (
        IngestSource.model_validate(get_json(k8s, "ingestsource", "status-src", "-n", namespace)).status
        == source_status
    )
    assert (
        RetrainPolicy.model_validate(get_json(k8s, "retrainpolicy", "status-rtp", "-n", namespace)).status
        == policy_status
    )

    row = k8s.kubectl(
        "get", "dataset", "status-ds", "-n", namespace, "--no-headers", check=True
    ).stdout.split()
    assert row[:4] == ["status-ds", "1.2.0", "42", "True"]
    row = k8s.kubectl(
        "get", "ingestsource", "status-src", "-n", namespace, "--no-headers", check=True
    ).stdout.split()
    assert row[:4] == ["status-src", "/data", "50", "True"]  # the empty BUCKET column prints nothing
    row = k8s.kubectl(
        "get", "retrainpolicy", "status-rtp", "-n", namespace, "--no-headers", check=True
    ).stdout.split()
    assert row[:4] == ["status-rtp", "status-ds", "Running", "True"]

    # The operator removes status keys with a merge patch of nulls.
    k8s.patch_status("dataset", "status-ds", namespace, {"job": None, "lineageUri": None})
    status = get_json(k8s, "dataset", "status-ds", "-n", namespace)["status"]
    assert "job" not in status and "lineageUri" not in status and status["currentVersion"] == "1.2.0"


def test_null_for_an_optional_field_is_dropped(
    k8s: ControlPlane, loupe_crds: tuple[str, ...], namespace: str
) -> None:
    """Optional fields are not nullable: the API server drops a null before validation (crd.py relies on it)."""
    spec = {"filesystem": {"path": "/data"}, "s3": None, "video": {"everyNthFrame": 5, "fps": None}}
    k8s.apply(manifest("IngestSource", "nulls", spec), namespace=namespace)
    stored = get_json(k8s, "ingestsource", "nulls", "-n", namespace)["spec"]
    assert "s3" not in stored
    assert stored["video"] == {"everyNthFrame": 5, "maxFramesPerVideo": 300}  # and the default filled in


# name, kind, spec, [fragments the API server's error must contain]
INVALID: list[tuple[str, str, dict[str, Any], list[str]]] = [
    (
        "wrong-type",
        "Dataset",
        {"sources": [{"name": "a"}], "qualityGates": {"blur": {"threshold": "high"}}},
        ["spec.qualityGates.blur.threshold", "must be of type number"],
    ),
    (
        "out-of-range",
        "Dataset",
        {"sources": [{"name": "a"}], "qualityGates": {"dark": {"threshold": 2}}},
        ["spec.qualityGates.dark.threshold", "should be less than or equal to 1"],
    ),
    (
        "bad-enum",
        "Dataset",
        {"sources": [{"name": "a"}], "qualityGates": {"blur": {"action": "explode"}}},
        ["spec.qualityGates.blur.action", "Unsupported value", '"explode"'],
    ),
    ("missing-sources", "Dataset", {}, ["spec.sources", "Required value"]),
    ("empty-sources", "Dataset", {"sources": []}, ["spec.sources", "should have at least 1 items"]),
    (
        "both-locations",
        "IngestSource",
        {"s3": {"bucket": "raw-images"}, "filesystem": {"path": "/data"}},
        ["spec", "set exactly one of s3 and filesystem"],
    ),
    ("no-location", "IngestSource", {"include": ["*.jpg"]}, ["spec", "set exactly one of s3 and filesystem"]),
    (
        "splits-not-one",
        "Dataset",
        {"sources": [{"name": "a"}], "splits": {"train": 0.5, "val": 0.1, "test": 0.1}},
        ["spec.splits", "train + val + test must equal 1"],
    ),
    (
        "splits-defaults-not-one",
        "Dataset",
        {"sources": [{"name": "a"}], "splits": {"train": 0.5}},
        ["spec.splits", "train + val + test must equal 1"],
    ),
    (
        "selector-and-workers",
        "Dataset",
        {"sources": [{"name": "a"}], "ray": {"clusterSelector": {"ray.io/cluster": "shared"}, "workers": 2}},
        ["spec.ray", "clusterSelector runs on an existing RayCluster"],
    ),
    (
        "bad-quantity",
        "Dataset",
        {"sources": [{"name": "a"}], "ray": {"worker": {"memory": "lots"}}},
        ["spec.ray.worker.memory", "should match"],
    ),
    (
        "two-frame-rates",
        "IngestSource",
        {"filesystem": {"path": "/data"}, "video": {"everyNthFrame": 5, "fps": 2}},
        ["spec.video", "set at most one of everyNthFrame and fps"],
    ),
    (
        "bad-duration",
        "IngestSource",
        {"filesystem": {"path": "/data"}, "pollInterval": "five minutes"},
        ["spec.pollInterval", "should match"],
    ),
    (
        "two-actions",
        "RetrainPolicy",
        {"datasetRef": "defects", "action": {"webhook": {"url": "http://x"}, "command": ["train"]}},
        ["spec.action", "set exactly one of job, rayJob, webhook and command"],
    ),
    (
        "unknown-field",
        "Dataset",
        {"sources": [{"name": "a"}], "qualityGates": {"blurr": {"action": "reject"}}},
        ['unknown field "spec.qualityGates.blurr"'],
    ),
]


@pytest.mark.parametrize(
    ("kind", "spec", "fragments"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_specs_are_rejected(
    k8s: ControlPlane,
    loupe_crds: tuple[str, ...],
    namespace: str,
    kind: str,
    spec: dict[str, Any],
    fragments: list[str],
) -> None:
    name = f"bad-{uuid.uuid4().hex[:6]}"
    result = k8s.apply(
        manifest(kind, name, spec), namespace=namespace, args=["--validate=strict"], check=False
    )
    assert result.returncode != 0, f"the API server accepted {spec}"
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    # Nothing was stored.
    assert k8s.kubectl("get", kind.lower(), name, "-n", namespace).returncode != 0


# --- KubeRay ---------------------------------------------------------------------------------------
def test_kuberay_rayjob_crd_applies_server_side(k8s: ControlPlane) -> None:
    crd = kuberay_crd("ray.io_rayjobs.yaml")
    assert crd.stat().st_size > 262144  # too large for client-side apply's last-applied annotation
    result = k8s.apply(crd, server_side=True, check=False)
    assert result.returncode == 0, result.stderr
    k8s.wait_crds_established("rayjobs.ray.io")
    versions = get_json(k8s, "customresourcedefinition", "rayjobs.ray.io")["spec"]["versions"]
    assert "v1" in [v["name"] for v in versions if v["served"]]
