"""The Helm chart in tests: helm itself, rendering, the chart's RBAC as the operator's identity.

``helm`` comes from ``bash .ci/tools.sh helm`` (built from the Go module proxy on first use and cached,
like the control plane's binaries), or from ``$LOUPE_HELM`` when set.

The main helper for e2e tests is :func:`operator_kubeconfig`: it installs the chart's ServiceAccount and
RBAC into a control plane and writes a kubeconfig that authenticates as that ServiceAccount (a token
from the TokenRequest API), so an operator started with it has exactly the chart's permissions::

    kubeconfig = operator_kubeconfig(plane, tmp_path, watch_namespaces=["loupe-e2e"])
    start_operator(kubeconfig, tmp_path, "operator.log", ["loupe-e2e"])

Generated files kept in sync by tests (``python tests/support/chart.py write`` rewrites them all):
the chart's copy of ``crds/``, ``argocd/argocd-cm.yaml`` (the Lua health checks) and the configuration
table in the chart's README (from ``values.schema.json``).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from support.control_plane import ControlPlane

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "loupe"
TOOLS_SCRIPT = REPO_ROOT / ".ci" / "tools.sh"
ARGOCD_DIR = CHART / "argocd"
ARGOCD_CM = ARGOCD_DIR / "argocd-cm.yaml"
CHART_README = CHART / "README.md"
# Kind of each health check, by file name (Argo CD keys them by group_Kind).
HEALTH_CHECKS = {
    "dataset.lua": "Dataset",
    "ingestsource.lua": "IngestSource",
    "retrainpolicy.lua": "RetrainPolicy",
}
TABLE_BEGIN = "<!-- values-table:begin (generated from values.schema.json by tests/support/chart.py) -->"
TABLE_END = "<!-- values-table:end -->"

_BUILD_TIMEOUT_S = 1800.0


@functools.cache
def helm_binary() -> Path:
    """``$LOUPE_HELM``, else the pinned build from ``bash .ci/tools.sh helm`` (built on first use)."""
    override = os.environ.get("LOUPE_HELM")
    if override:
        return Path(override)
    result = subprocess.run(
        ["bash", str(TOOLS_SCRIPT), "helm"],
        capture_output=True,
        text=True,
        timeout=_BUILD_TIMEOUT_S,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise RuntimeError(
            f"`bash {TOOLS_SCRIPT} helm` failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
        )
    return Path(lines[-1])


def helm(
    *args: str | os.PathLike[str], kubeconfig: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run helm with a private cache and config folder (never the user's repositories or plugins)."""
    home = Path(os.environ.get("LOUPE_HELM_HOME", "/tmp/loupe-helm-home"))
    env = {
        **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    cmd = [str(helm_binary()), *(os.fspath(a) for a in args)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"`helm {' '.join(cmd[1:])}` failed (exit {result.returncode}):\n{result.stderr}")
    return result


def template(
    values: Mapping[str, Any] | None = None,
    *,
    values_files: Sequence[Path] = (),
    release: str = "loupe",
    namespace: str = "loupe-system",
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart with ``values_files`` and then ``values`` (one more values file)."""
    args: list[str | os.PathLike[str]] = ["template", release, CHART, "--namespace", namespace]
    for path in values_files:
        args += ["--values", path]
    with tempfile.TemporaryDirectory(prefix="loupe-values-") as folder:
        if values:
            # JSON is YAML: a values file keeps the types (lists, booleans) that --set would guess.
            path = Path(folder) / "values.json"
            path.write_text(json.dumps(values))
            args += ["--values", path]
        return helm(*args, check=check)


def documents(rendered: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a rendering."""
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def as_list(docs: Iterable[Mapping[str, Any]]) -> str:
    """A ``v1/List`` of objects, as JSON for ``kubectl apply -f -``."""
    # indented: ControlPlane.apply takes text with a newline as YAML, not as a path
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)}, indent=1)


def install_chart_crds(plane: ControlPlane) -> None:
    """Apply the chart's crds/ (Loupe's CRDs and kopf's peering CRDs) and wait until they are served."""
    plane.apply(CHART / "crds", server_side=True)
    names = [
        doc["metadata"]["name"]
        for path in sorted((CHART / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    plane.wait_crds_established(*names)


def service_account_kubeconfig(
    plane: ControlPlane, namespace: str, service_account: str, path: Path, duration: str = "4h"
) -> Path:
    """Write a kubeconfig at ``path`` that authenticates as the ServiceAccount with a bound token.

    The token comes from the TokenRequest API (``kubectl create token``), as a pod's projected token
    does; the API server of the test control plane signs and verifies it with its service-account key.
    """
    token = plane.kubectl(
        "create", "token", service_account, "-n", namespace, f"--duration={duration}", check=True
    ).stdout.strip()
    admin = yaml.safe_load(Path(plane.kubeconfig_path).read_text())
    cluster = admin["clusters"][0]
    user = f"system:serviceaccount:{namespace}:{service_account}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": cluster["name"], "user": user, "namespace": namespace},
            }
        ],
        "current-context": "operator",
        "preferences": {},
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def operator_kubeconfig(
    plane: ControlPlane,
    folder: Path,
    watch_namespaces: Sequence[str],
    *,
    release: str = "loupe",
    namespace: str = "loupe-system",
    values: Mapping[str, Any] | None = None,
) -> Path:
    """Install the chart's ServiceAccount and RBAC for ``watch_namespaces`` (empty: cluster-wide) and
    return a kubeconfig (``folder/operator-kubeconfig``) that acts as that ServiceAccount.

    Only the ServiceAccount and RBAC objects are applied: the operator runs as a local process. The
    namespaces are created when missing; the CRDs must be installed already.
    """
    for name in {namespace, *watch_namespaces}:
        if plane.kubectl("get", "namespace", name).returncode != 0:
            plane.kubectl("create", "namespace", name, check=True)
    rendered = template(
        {**(values or {}), "watchNamespaces": list(watch_namespaces)}, release=release, namespace=namespace
    )
    wanted = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    objects = [doc for doc in documents(rendered.stdout) if doc.get("kind") in wanted]
    plane.apply(as_list(objects))
    account = next(doc for doc in objects if doc["kind"] == "ServiceAccount")["metadata"]["name"]
    return service_account_kubeconfig(plane, namespace, account, folder / "operator-kubeconfig")


# --- Argo CD ---------------------------------------------------------------------------------------
def argocd_health(kind: str, obj: Mapping[str, Any]) -> tuple[str, str]:
    """Run the chart's health check for ``kind`` on ``obj`` as Argo CD does: Lua 5.1 (gopher-lua is a
    5.1 interpreter), the object as the global ``obj``, no os/io libraries; returns (status, message)."""
    from lupa.lua51 import LuaRuntime  # type: ignore[import-untyped]

    name = next(file for file, k in HEALTH_CHECKS.items() if k == kind)
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.execute("os, io, require, dofile, loadfile = nil, nil, nil, nil, nil")
    lua.globals().obj = lua.table_from(json.loads(json.dumps(obj)), recursive=True)
    result = lua.execute((ARGOCD_DIR / name).read_text())
    status, message = result["status"], result["message"]
    if status not in ("Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"):
        raise AssertionError(f"{name} returned the status {status!r}, which Argo CD does not know")
    return str(status), str(message or "")


# --- generated files -------------------------------------------------------------------------------
class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so the Lua in argocd-cm.yaml reads like the .lua files."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str)


def argocd_cm_text() -> str:
    """The argocd-cm snippet that carries every health check, byte for byte."""
    data = {
        f"resource.customizations.health.loupe.dev_{kind}": (ARGOCD_DIR / name).read_text()
        for name, kind in HEALTH_CHECKS.items()
    }
    body = yaml.dump(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "argocd-cm",
                "namespace": "argocd",
                "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"},
            },
            "data": data,
        },
        Dumper=_LiteralDumper,
        sort_keys=False,
        width=120,
    )
    header = (
        "# Argo CD health checks for Loupe's resources (generated from the .lua files beside this one by\n"
        "# `python tests/support/chart.py write`). Merge them into Argo CD's argocd-cm ConfigMap:\n"
        "#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file argocd-cm.yaml\n"
        "# or add the data keys to the argocd-cm of your Argo CD installation's values.\n"
    )
    return header + body


def _flatten(schema: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    for key, prop in (schema.get("properties") or {}).items():
        name = f"{prefix}{key}"
        if "default" not in prop and prop.get("properties"):  # a group: one row per value in it
            rows += _flatten(prop, name + ".")
            continue
        kind = prop.get("type", "any")
        kind = " or ".join(kind) if isinstance(kind, list) else kind
        if "enum" in prop:
            kind += " (" + ", ".join(str(v) for v in prop["enum"]) + ")"
        default = json.dumps(prop["default"]) if "default" in prop else ""
        rows.append((name, kind, default, prop.get("description", "")))
    return rows


def configuration_table() -> str:
    """The Markdown table of every value, from values.schema.json."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = ["| value | type | default | description |", "| --- | --- | --- | --- |"]
    for name, kind, default, description in _flatten(schema):
        description = description.replace("|", "\\|")
        lines.append(f"| `{name}` | {kind} | `{default}` | {description} |")
    return "\n".join(lines)


def readme_with_table(readme: str) -> str:
    """The chart README with the text between the table markers replaced by :func:`configuration_table`."""
    head, sep, rest = readme.partition(TABLE_BEGIN)
    _, sep2, tail = rest.partition(TABLE_END)
    if not sep or not sep2:
        raise ValueError(f"{CHART_README} lacks the markers {TABLE_BEGIN!r} ... {TABLE_END!r}")
    return f"{head}{TABLE_BEGIN}\n{configuration_table()}\n{TABLE_END}{tail}"


def chart_crd_files() -> dict[str, str]:
    """File name -> expected text of the chart's copies of crds/*.yaml (byte-identical)."""
    return {path.name: path.read_text() for path in sorted((REPO_ROOT / "crds").glob("*.yaml"))}


def write_generated() -> None:
    for name, text in chart_crd_files().items():
        (CHART / "crds" / name).write_text(text)
    ARGOCD_CM.write_text(argocd_cm_text())
    CHART_README.write_text(readme_with_table(CHART_README.read_text()))


if __name__ == "__main__":
    if sys.argv[1:] != ["write"]:
        sys.exit("usage: python tests/support/chart.py write   # chart crds/, argocd-cm.yaml, README table")
    write_generated()
