"""The Helm chart, images, kind script and examples, checked against a real kube-apiserver.

helm lint; helm template with every values file in charts/loupe/ci/, each applied with
``kubectl apply --dry-run=server``; a real ``helm install``/``upgrade``/``uninstall``; values the schema
must refuse; ``kubectl auth can-i`` as the chart's ServiceAccount; hadolint on the Dockerfiles;
shellcheck on the kind script; every example applied to the API server with the real CRDs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.chart import (
    ARGOCD_CM,
    CHART,
    CHART_README,
    argocd_cm_text,
    as_list,
    chart_crd_files,
    documents,
    helm,
    install_chart_crds,
    readme_with_table,
    template,
)

REPO = Path(__file__).resolve().parents[2]
VALUES_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
TEAM_NAMESPACES = ("team-a", "team-b", "team-c")


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / name)
    if not Path(found).exists():
        raise AssertionError(f"{name} is missing: it comes with the dev dependencies (uv sync)")
    return found


@pytest.fixture(scope="module")
def plane() -> Iterator[Any]:
    from support.control_plane import ControlPlane, kuberay_crd

    with ControlPlane() as cp:
        install_chart_crds(cp)
        monitor_crd = subprocess.run(
            ["bash", str(REPO / ".ci" / "tools.sh"), "servicemonitor-crd"],
            capture_output=True, text=True, check=True, timeout=600,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        cp.apply(Path(monitor_crd), server_side=True)
        cp.apply(kuberay_crd("ray.io_rayjobs.yaml"), server_side=True)
        cp.wait_crds_established("servicemonitors.monitoring.coreos.com", "rayjobs.ray.io")
        for name in ("loupe-system", *TEAM_NAMESPACES):
            cp.kubectl("create", "namespace", name, check=True)
        yield cp


# --- static ----------------------------------------------------------------------------------------
def test_generated_files_are_in_sync() -> None:
    hint = "run `uv run python tests/support/chart.py write` and commit the result"
    for name, text in chart_crd_files().items():
        assert (CHART / "crds" / name).read_text() == text, (
            f"charts/loupe/crds/{name} differs from crds/: {hint}"
        )
    loupe_crds = {p.name for p in (CHART / "crds").glob("*.loupe.dev.yaml")}
    assert loupe_crds == set(chart_crd_files()), f"chart CRDs {loupe_crds} are not crds/'s: {hint}"
    assert ARGOCD_CM.read_text() == argocd_cm_text(), f"argocd-cm.yaml differs from the .lua files: {hint}"
    readme = CHART_README.read_text()
    assert readme == readme_with_table(readme), f"the chart README's configuration table is stale: {hint}"


def test_values_yaml_matches_schema_defaults() -> None:
    """Every default in values.yaml is the schema's default, and the schema documents every key."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node: dict[str, Any], props: dict[str, Any], path: str) -> None:
        for key, value in node.items():
            assert key in props, f"{path}{key} is in values.yaml but not in values.schema.json"
            prop = props[key]
            assert prop.get("description"), f"{path}{key} has no description in the schema"
            if "default" not in prop:  # a group of values: each has its own default
                walk(value, prop["properties"], f"{path}{key}.")
            else:
                assert prop.get("default") == value, (
                    f"{path}{key}: values.yaml {value!r} != schema {prop.get('default')!r}"
                )

    walk(values, schema["properties"], "")


def test_helm_lint() -> None:
    helm("lint", "--strict", CHART)
    for path in VALUES_FILES:
        helm("lint", "--strict", CHART, "--values", path)


def _deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment")


def test_default_render_is_hardened_and_labelled() -> None:
    docs = documents(template().stdout)
    for doc in docs:
        labels = doc["metadata"]["labels"]
        for key in ("name", "instance", "version", "managed-by", "component", "part-of"):
            assert f"app.kubernetes.io/{key}" in labels, (
                f"{doc['kind']} {doc['metadata']['name']} lacks {key}"
            )
        assert labels["helm.sh/chart"] == "loupe-0.1.0"
    deployment = _deployment(docs)
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "loupe_operator"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LOUPE_NAMESPACES"] == "[]" and env["LOUPE_RAY_MODE"] == "submit"
    assert env["LOUPE_LIVENESS_PORT"] == "8080" and env["LOUPE_METRICS_PORT"] == "9090"
    kinds = sorted(d["kind"] for d in docs)
    assert "Service" not in kinds and "ServiceMonitor" not in kinds


@pytest.mark.parametrize(
    "values_file", [None, *VALUES_FILES], ids=["default", *(p.stem for p in VALUES_FILES)]
)
def test_operator_reads_every_variable_the_chart_sets(
    values_file: Path | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered LOUPE_* environment is valid operator configuration, and none of it is ignored."""
    from loupe_operator.settings import OperatorSettings

    docs = documents(template(values_files=[values_file] if values_file else []).stdout)
    (container,) = _deployment(docs)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("LOUPE_")}
    known = {f"LOUPE_{name.upper()}" for name in OperatorSettings.model_fields}
    assert set(env) <= known, f"the chart sets variables the operator ignores: {sorted(set(env) - known)}"
    for name in list(os.environ):
        if name.startswith("LOUPE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert settings.worker_image == env["LOUPE_WORKER_IMAGE"]
    assert settings.namespaces == json.loads(env["LOUPE_NAMESPACES"])
    assert settings.worker_resources.cpu == json.loads(env["LOUPE_WORKER_RESOURCES"])["cpu"]


def test_chart_can_set_every_operator_setting() -> None:
    """A new operator setting needs a chart value: with every optional value set, the chart renders
    every LOUPE_* variable the operator reads."""
    from loupe_operator.settings import OperatorSettings

    values = {
        "storage": {
            "endpoint": "https://s3.example.com",
            "region": "eu-west-1",
            "credentialsSecret": "store",
        },
        "ray": {"address": "http://ray-head:8265", "kuberay": {"serviceAccountName": "ray"}},
    }
    (container,) = _deployment(documents(template(values).stdout))["spec"]["template"]["spec"]["containers"]
    rendered = {e["name"] for e in container["env"]}
    known = {f"LOUPE_{name.upper()}" for name in OperatorSettings.model_fields}
    assert known <= rendered, f"settings the chart cannot set: {sorted(known - rendered)}"


def test_values_files_render_what_they_say() -> None:
    def env_of(docs: list[dict[str, Any]]) -> dict[str, str]:
        (container,) = _deployment(docs)["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value", "") for e in container["env"]}

    namespaced = documents(template(values_files=[CHART / "ci" / "namespaced-values.yaml"]).stdout)
    roles = {
        (d["kind"], d["metadata"].get("namespace"))
        for d in namespaced
        if d["kind"] in ("Role", "ClusterRole")
    }
    assert ("Role", "team-a") in roles and ("Role", "team-b") in roles
    assert next(d for d in namespaced if d["kind"] == "ClusterRole")["metadata"]["name"] == "loupe-kopf"
    assert env_of(namespaced)["LOUPE_NAMESPACES"] == '["team-a","team-b"]'
    assert env_of(namespaced)["LOUPE_STORE_CREDENTIALS_SECRET"] == "loupe-store"

    gpu = documents(template(values_files=[CHART / "ci" / "kuberay-gpu-values.yaml"]).stdout)
    env = env_of(gpu)
    assert env["LOUPE_RAY_MODE"] == "kuberay" and env["LOUPE_WORKER_IMAGE"].endswith("-gpu")
    assert json.loads(env["LOUPE_WORKER_RESOURCES"]) == {"cpu": "8", "memory": "32Gi", "gpu": 1}
    assert env["LOUPE_RAY_SERVICE_ACCOUNT"] == "loupe-ray"
    assert not [d for d in gpu if d["metadata"]["name"] == "loupe-secrets" and d["kind"] == "ClusterRole"]

    metrics = documents(template(values_files=[CHART / "ci" / "metrics-values.yaml"]).stdout)
    monitor = next(d for d in metrics if d["kind"] == "ServiceMonitor")
    service = next(d for d in metrics if d["kind"] == "Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"

    peering = documents(template(values_files=[CHART / "ci" / "peering-values.yaml"]).stdout)
    deployment = _deployment(peering)
    assert deployment["spec"]["replicas"] == 2 and deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["command"] == ["python", "-m", "loupe_operator"] and env["LOUPE_PEERING"] == "loupe"
    assert json.loads(env["LOUPE_NAMESPACES"]) == ["team-a"]
    assert any(d["kind"] == "KopfPeering" and d["metadata"]["namespace"] == "team-a" for d in peering)


WRONG_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"replicaCount": 2}, "replicaCount"),
    ({"replicaCount": "two"}, "replicaCount"),
    ({"ray": {"mode": "slurm"}}, "ray/mode"),
    ({"ray": {"address": "ray-head:8265"}}, "ray/address"),
    ({"ray": {"kuberay": {"worker": {"gpu": -1}}}}, "gpu"),
    ({"ray": {"kuberay": {"head": {"memory": "lots"}}}}, "memory"),
    ({"logFormat": "xml"}, "logFormat"),
    ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
    ({"watchNamespaces": "team-a"}, "watchNamespaces"),
    ({"metrics": {"port": 80}}, "metrics/port"),
    ({"metrics": {"serviceMonitor": {"enabled": True}}}, "metrics"),
    ({"storage": {"endpoint": "minio:9000"}}, "storage/endpoint"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"imagePullPolicy": "Always"}, "imagePullPolicy"),  # a typo of image.pullPolicy: unknown key
    ({"jobs": {"maxAttempts": 0}}, "maxAttempts"),
]


@pytest.mark.parametrize(("values", "where"), WRONG_VALUES, ids=[json.dumps(v) for v, _ in WRONG_VALUES])
def test_schema_rejects_wrong_values(values: dict[str, Any], where: str) -> None:
    result = template(values, check=False)
    assert result.returncode != 0, f"helm accepted {values}"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert where in result.stderr, result.stderr


def test_template_guards_apply_without_the_schema() -> None:
    """The same rules hold when a user skips schema validation."""
    result = helm("template", "x", CHART, "--skip-schema-validation", "--set", "replicaCount=3", check=False)
    assert result.returncode != 0 and "replicaCount > 1 needs peering.enabled=true" in result.stderr


# --- against the API server ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "values_file", [None, *VALUES_FILES], ids=["default", *(p.stem for p in VALUES_FILES)]
)
def test_rendered_chart_passes_server_dry_run(plane: Any, values_file: Path | None) -> None:
    rendered = template(values_files=[values_file] if values_file else [])
    docs = documents(rendered.stdout)
    result = plane.apply(as_list(docs), args=["--dry-run=server"], check=False)
    assert result.returncode == 0, f"{result.stderr}\n{result.stdout}"
    assert result.stdout.count("(server dry run)") == len(docs), result.stdout


def test_helm_install_upgrade_uninstall_keeps_crds_and_objects(plane: Any) -> None:
    kubeconfig = plane.kubeconfig_path
    namespace = "loupe-helm"
    helm("install", "loupe", CHART, "-n", namespace, "--create-namespace",
         "--set", "storage.default=s3://datasets", kubeconfig=kubeconfig)  # fmt: skip
    deployment = json.loads(
        plane.kubectl("get", "deployment", "loupe", "-n", namespace, "-o", "json", check=True).stdout
    )
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LOUPE_DEFAULT_STORE"] == "s3://datasets"
    plane.apply(
        "apiVersion: loupe.dev/v1alpha1\nkind: IngestSource\nmetadata: {name: kept, namespace: team-c}\n"
        "spec: {filesystem: {path: /data}}\n"
    )
    helm("upgrade", "loupe", CHART, "-n", namespace, "--reuse-values",
         "--set", "ray.mode=kuberay", "--set", "logFormat=text", kubeconfig=kubeconfig)  # fmt: skip
    deployment = json.loads(
        plane.kubectl("get", "deployment", "loupe", "-n", namespace, "-o", "json", check=True).stdout
    )
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LOUPE_RAY_MODE"] == "kuberay" and env["LOUPE_DEFAULT_STORE"] == "s3://datasets"
    helm("uninstall", "loupe", "-n", namespace, kubeconfig=kubeconfig)
    assert plane.kubectl("get", "deployment", "loupe", "-n", namespace).returncode != 0
    assert plane.kubectl("get", "clusterrole", "loupe").returncode != 0
    for crd in chart_crd_files():
        assert plane.kubectl("get", "crd", crd.removesuffix(".yaml")).returncode == 0
    assert plane.kubectl("get", "ingestsource", "kept", "-n", "team-c").returncode == 0


# --- RBAC ------------------------------------------------------------------------------------------
def _install_rbac(plane: Any, release: str, namespace: str, values: dict[str, Any]) -> str:
    if plane.kubectl("get", "namespace", namespace).returncode != 0:
        plane.kubectl("create", "namespace", namespace, check=True)
    docs = documents(template(values, release=release, namespace=namespace).stdout)
    wanted = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    plane.apply(as_list([d for d in docs if d["kind"] in wanted]))
    account = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    return f"system:serviceaccount:{namespace}:{account}"


def _can(
    plane: Any, user: str, verb: str, resource: str, namespace: str | None, subresource: str = ""
) -> bool:
    """``kubectl auth can-i --as=<user>`` (impersonation and a SelfSubjectAccessReview)."""
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    if subresource:
        args.append(f"--subresource={subresource}")
    answer: str = plane.kubectl(*args).stdout.strip()
    assert answer in ("yes", "no"), f"{args}: {answer!r}"
    return answer == "yes"


Check = tuple[str, str, str | None, str]  # verb, resource[.group], namespace (None: cluster), subresource


def _allowed(plane: Any, user: str, checks: list[Check]) -> dict[Check, bool]:
    """The answers ``kubectl auth can-i`` gives, for many checks in one request: a List of
    SubjectAccessReviews for the ServiceAccount (its user name and groups), created at once."""
    namespace_of_sa = user.split(":")[2]
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace_of_sa}", "system:authenticated"]
    reviews = []
    for verb, resource, namespace, subresource in checks:
        name, _, group = resource.partition(".")
        attributes = {"verb": verb, "resource": name, "group": "*" if name == "*" else group}
        if namespace:
            attributes["namespace"] = namespace
        if subresource:
            attributes["subresource"] = subresource
        reviews.append({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": groups, "resourceAttributes": attributes},
        })  # fmt: skip
    out = plane.kubectl("create", "-o", "json", "-f", "-", input=as_list(reviews), check=True).stdout
    # kubectl prints each created object as its own JSON document, one after the other
    decoder, items, position = json.JSONDecoder(), [], 0
    while out[position:].strip():
        item, position = decoder.raw_decode(out, len(out) - len(out[position:].lstrip()))
        items.append(item)
    return {check: bool(item["status"].get("allowed")) for check, item in zip(checks, items, strict=True)}


def _assert_access(plane: Any, user: str, allowed: list[Check], denied: list[Check]) -> None:
    answers = _allowed(plane, user, allowed + denied)
    missing = [c for c in allowed if not answers[c]]
    extra = [c for c in denied if answers[c]]
    assert not missing, f"{user} lacks (verb, resource, namespace, subresource): {missing}"
    assert not extra, f"{user} must not have: {extra}"
    # spot checks through kubectl auth can-i itself, which must agree
    for check in (allowed[0], allowed[-1], denied[0], denied[-1]):
        verb, resource, namespace, subresource = check
        assert _can(plane, user, verb, resource, namespace, subresource) == answers[check], check


# (verb, resource, subresource): what the operator does in a namespace it reconciles
OPERATOR_VERBS = [
    *((v, f"{r}.loupe.dev", "") for r in ("datasets", "ingestsources", "retrainpolicies")
      for v in ("get", "list", "watch", "patch")),
    *(("patch", f"{r}.loupe.dev", "status") for r in ("datasets", "ingestsources", "retrainpolicies")),
    ("create", "events", ""), ("patch", "events", ""), ("create", "events.events.k8s.io", ""),
    *((v, "rayjobs.ray.io", "") for v in ("get", "list", "watch", "create", "patch", "delete")),
    *((v, "jobs.batch", "") for v in ("get", "list", "watch", "create", "delete")),
    ("get", "secrets", ""),
    ("update", "datasets.loupe.dev", "finalizers"),
]  # fmt: skip
# what it must never do, anywhere
FORBIDDEN = [
    ("list", "secrets", ""), ("watch", "secrets", ""), ("create", "secrets", ""),
    ("create", "pods", "exec"), ("get", "pods", "log"), ("create", "pods", ""), ("delete", "pods", ""),
    ("delete", "datasets.loupe.dev", ""), ("create", "datasets.loupe.dev", ""), ("update", "datasets.loupe.dev", ""),
    ("*", "*", ""), ("create", "rolebindings.rbac.authorization.k8s.io", ""),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", ""), ("impersonate", "serviceaccounts", ""),
    ("create", "serviceaccounts", "token"), ("get", "configmaps", ""), ("create", "deployments.apps", ""),
]  # fmt: skip
CLUSTER_FORBIDDEN = [
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("create", "namespaces", ""), ("delete", "namespaces", ""), ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
    ("get", "nodes", ""),
]  # fmt: skip


KOPF_CLUSTER_READS: list[Check] = [
    (verb, resource, None, "")
    for verb in ("list", "watch")
    for resource in ("customresourcedefinitions.apiextensions.k8s.io", "namespaces")
]


def test_rbac_cluster_wide_install(plane: Any) -> None:
    user = _install_rbac(plane, "loupe-cw", "loupe-cw", {})
    allowed: list[Check] = [
        (v, r, ns, sub) for v, r, sub in OPERATOR_VERBS for ns in (*TEAM_NAMESPACES, None)
    ]
    allowed += KOPF_CLUSTER_READS
    denied: list[Check] = [
        (v, r, ns, sub) for v, r, sub in FORBIDDEN for ns in (*TEAM_NAMESPACES, "loupe-cw", "kube-system")
    ]
    denied += [(v, r, None, sub) for v, r, sub in CLUSTER_FORBIDDEN]
    denied.append(("patch", "clusterkopfpeerings.kopf.dev", None, ""))  # no peering
    _assert_access(plane, user, allowed, denied)


def test_rbac_cluster_wide_install_with_secret_namespaces(plane: Any) -> None:
    user = _install_rbac(plane, "loupe-sn", "loupe-sn", {"rbac": {"secretNamespaces": ["team-a"]}})
    allowed: list[Check] = [("get", "secrets", "team-a", ""), ("patch", "datasets.loupe.dev", "team-b", "")]
    denied: list[Check] = [
        ("get", "secrets", ns, "") for ns in ("team-b", "team-c", "loupe-sn", "kube-system")
    ]
    denied.append(("get", "secrets", None, ""))
    _assert_access(plane, user, allowed, denied)


def test_rbac_namespaced_install(plane: Any) -> None:
    values = {"watchNamespaces": ["team-a", "team-b"], "peering": {"enabled": True}}
    user = _install_rbac(plane, "loupe-ns", "loupe-ns", values)
    allowed: list[Check] = [(v, r, ns, sub) for v, r, sub in OPERATOR_VERBS for ns in ("team-a", "team-b")]
    allowed += [(v, "kopfpeerings.kopf.dev", "team-a", "") for v in ("get", "list", "watch", "patch")]
    allowed += KOPF_CLUSTER_READS  # kopf matches namespaces even when they are named
    denied: list[Check] = [
        (v, r, ns, sub) for v, r, sub in OPERATOR_VERBS for ns in ("team-c", "loupe-ns", None)
    ]
    denied += [(v, r, ns, sub) for v, r, sub in FORBIDDEN for ns in ("team-a", "team-c", "loupe-ns")]
    denied += [(v, r, None, sub) for v, r, sub in CLUSTER_FORBIDDEN]
    _assert_access(plane, user, allowed, denied)


# --- images, kind, examples ------------------------------------------------------------------------
DOCKERFILES = [
    REPO / "operator" / "Dockerfile",
    REPO / "workers" / "Dockerfile",
    REPO / "workers" / "Dockerfile.gpu",
]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--failure-threshold", "info", str(dockerfile)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    assert "\nUSER " in text and "USER root" not in text.split("\nUSER ")[-1], (
        "the image must end as non-root"
    )
    for line in text.splitlines():
        if line.startswith("FROM "):
            image = line.split()[1]
            assert ":" in image and not image.endswith(":latest"), f"unpinned base image {image}"


def test_kind_script_passes_shellcheck() -> None:
    scripts = [REPO / "examples" / "kind" / "up.sh", REPO / ".ci" / "tools.sh", REPO / "tests" / "run.sh"]
    result = subprocess.run(
        [_tool("shellcheck"), "--severity=style", *map(str, scripts)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# The Kubernetes examples this file owns; 01 and 05 run in embedded mode in their own tests.
EXAMPLE_DIRS = [
    *(REPO / "examples" / name for name in ("02-s3-kuberay", "03-video", "04-dedup-embedding")),
    REPO / "examples" / "gitops" / "datasets",
]


def test_every_example_has_a_readme() -> None:
    for folder in [*EXAMPLE_DIRS[:-1], REPO / "examples" / "kind", REPO / "examples" / "gitops"]:
        assert (folder / "README.md").is_file(), folder


def test_gitops_applications_point_at_what_exists() -> None:
    """No Argo CD CRDs here: check the Applications' shape and that their paths and values exist."""
    for path in sorted((REPO / "examples" / "gitops" / "apps").glob("*.yaml")):
        app = yaml.safe_load(path.read_text())
        assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application", path
        source = app["spec"]["source"]
        folder = REPO / source["path"]
        assert folder.is_dir(), f"{path.name}: {source['path']} does not exist"
        for values in source.get("helm", {}).get("valueFiles", []):
            values_path = (folder / values).resolve()
            assert values_path.is_file(), f"{path.name}: {values} does not exist"
            documents(template(values_files=[values_path]).stdout)  # the chart takes these values
        assert app["spec"]["destination"]["namespace"]


def test_worker_images_run_the_locked_ray() -> None:
    """The Ray base image must match the ray in uv.lock, or the driver and workers disagree."""
    import tomllib

    lock = tomllib.loads((REPO / "uv.lock").read_text())
    ray = next(p["version"] for p in lock["package"] if p["name"] == "ray")
    for dockerfile in DOCKERFILES[1:]:
        bases = [
            line.split()[1]
            for line in dockerfile.read_text().splitlines()
            if line.startswith("FROM rayproject/")
        ]
        assert bases and all(b.split(":")[1].startswith(f"{ray}-py311") for b in bases), (
            dockerfile,
            bases,
            ray,
        )
    assert (
        "-gpu"
        in (REPO / "workers" / "Dockerfile.gpu").read_text().split("FROM rayproject/ray:")[1].split()[0]
    )


@pytest.mark.parametrize("folder", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_example_passes_server_dry_run(plane: Any, folder: Path) -> None:
    """Each example's YAML validates against the real CRD schemas (and CEL rules) of the API server."""
    manifests = sorted(folder.glob("*.yaml"))
    assert manifests, folder
    for manifest in manifests:
        docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
        namespaces = {d["metadata"].get("namespace") for d in docs} - {None}
        for namespace in namespaces:
            if plane.kubectl("get", "namespace", namespace).returncode != 0:
                plane.kubectl("create", "namespace", namespace, check=True)
        result = plane.apply(manifest, args=["--dry-run=server"], check=False)
        assert result.returncode == 0, f"{manifest}: {result.stderr}"
