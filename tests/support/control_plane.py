"""A real Kubernetes control plane for tests: etcd and kube-apiserver as child processes, envtest-style.

The binaries (``etcd``, ``kube-apiserver``, ``kubectl``) come from the folder ``$KUBEBUILDER_ASSETS``
names, as for controller-runtime's envtest, or else from ``bash .ci/tools.sh assets``, which builds the
pinned Kubernetes from the Go module proxy into ``${LOUPE_TOOLS_CACHE:-~/.cache/loupe-tools}`` on
first use (tens of minutes on a small machine; then cached).

With ``LOUPE_TEST_USE_EXISTING_CLUSTER=1`` nothing is started: the cluster of the current context of
``$KUBECONFIG`` (or ``~/.kube/config``) is used instead, e.g. a kind cluster, so the same tests run there.

    with ControlPlane() as cp:
        cp.apply(Path("crds"))                       # kubectl apply -f crds
        cp.wait_crds_established("datasets.loupe.dev")
        cp.apply("apiVersion: v1\\nkind: Namespace\\nmetadata: {name: demo}\\n")
        print(cp.kubectl("get", "namespaces").stdout)

The API server serves HTTPS on a free loopback port with certificates made for it (the ``cryptography``
package when importable, else ``openssl``), authorises with RBAC, and the kubeconfig it writes
authenticates as an admin (a client certificate in group ``system:masters``). etcd keeps its data in a
temporary folder that ``stop()`` deletes. Both servers run in their own process groups; any still running
when the interpreter exits are killed.
"""

from __future__ import annotations

import base64
import datetime
import functools
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Sequence
from http.client import HTTPResponse
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from support.processes import free_port, live_processes, stop_group, tail, wait_http_ready

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_SCRIPT = REPO_ROOT / ".ci" / "tools.sh"

BINARIES = ("etcd", "kube-apiserver", "kubectl")
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
ADMIN_USER = "loupe-admin"
ADMIN_GROUP = "system:masters"

# Building Kubernetes from source the first time takes tens of minutes on a small machine.
_BUILD_TIMEOUT_S = 3600.0
_STOP_TIMEOUT_S = 10.0
_KUBECTL_TIMEOUT_S = 120.0


class ControlPlaneError(RuntimeError):
    """The control plane could not be found, built, started or used."""


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


# --- binaries --------------------------------------------------------------------------------------
def _run_tools(tool: str) -> Path:
    """Run ``bash .ci/tools.sh <tool>`` (building on first use) and return the path it prints."""
    try:
        result = subprocess.run(
            ["bash", str(TOOLS_SCRIPT), tool],
            capture_output=True,
            text=True,
            timeout=_BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ControlPlaneError(
            f"`bash {TOOLS_SCRIPT} {tool}` did not finish in {_BUILD_TIMEOUT_S:.0f}s"
        ) from exc
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        tail = "\n".join(result.stderr.strip().splitlines()[-30:])
        raise ControlPlaneError(
            f"`bash {TOOLS_SCRIPT} {tool}` failed (exit {result.returncode}); set KUBEBUILDER_ASSETS to a "
            f"folder holding etcd, kube-apiserver and kubectl to skip the build.\n{tail}"
        )
    return Path(lines[-1])


@functools.cache
def find_assets() -> Path:
    """The folder holding etcd, kube-apiserver and kubectl: ``$KUBEBUILDER_ASSETS``, else the cached build.

    The build (``bash .ci/tools.sh assets``) runs now if the binaries are missing.
    """
    override = os.environ.get("KUBEBUILDER_ASSETS")
    folder = Path(override) if override else find_assets_from_tools()
    missing = [name for name in BINARIES if not _is_executable(folder / name)]
    if missing:
        source = "KUBEBUILDER_ASSETS" if override else f"`bash {TOOLS_SCRIPT} assets`"
        raise ControlPlaneError(f"{source} names {folder}, which lacks the executables {', '.join(missing)}")
    return folder


@functools.cache
def find_assets_from_tools() -> Path:
    """The folder ``bash .ci/tools.sh assets`` prints (built if missing), whatever KUBEBUILDER_ASSETS says."""
    return _run_tools("assets")


def pinned_kubernetes_version() -> str:
    """The Kubernetes version ``.ci/tools.sh`` builds (``v1.34.4``): its cache folder's name."""
    return find_assets_from_tools().name


@functools.cache
def _kuberay_crd_dir() -> Path:
    return _run_tools("kuberay-crds").parent


def kuberay_crd(file_name: str = "ray.io_rayjobs.yaml") -> Path:
    """One of KubeRay's CRD files (``ray.io_rayjobs.yaml``, ...), from ``bash .ci/tools.sh kuberay-crds``."""
    path = _kuberay_crd_dir() / file_name
    if not path.is_file():
        raise ControlPlaneError(f"KubeRay has no CRD file {file_name} (looked in {path.parent})")
    return path


def _find_kubectl() -> Path:
    """kubectl for an existing cluster: from KUBEBUILDER_ASSETS, else on PATH, else the cached build."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and _is_executable(Path(assets) / "kubectl"):
        return Path(assets) / "kubectl"
    on_path = shutil.which("kubectl")
    if on_path:
        return Path(on_path)
    return _run_tools("kubectl")


def binary_version(binary: Path) -> str:
    """``--version`` of a Kubernetes binary, e.g. ``v1.34.4`` for ``Kubernetes v1.34.4``."""
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return out.split()[-1]


def use_existing_cluster() -> bool:
    """Whether ``LOUPE_TEST_USE_EXISTING_CLUSTER`` asks for the cluster of the current kubeconfig."""
    return os.environ.get("LOUPE_TEST_USE_EXISTING_CLUSTER", "").lower() in {"1", "true", "yes"}


# --- certificates ----------------------------------------------------------------------------------
class _Pki:
    """File paths of the certificates and keys one control plane uses (PEM)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca_cert = folder / "ca.crt"
        self.ca_key = folder / "ca.key"
        self.server_cert = folder / "apiserver.crt"
        self.server_key = folder / "apiserver.key"
        self.admin_cert = folder / "admin.crt"
        self.admin_key = folder / "admin.key"
        self.sa_key = folder / "service-account.key"
        self.sa_pub = folder / "service-account.pub"

    def generate(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # LOUPE_TEST_PKI_BACKEND=openssl forces the fallback, to test it where cryptography is installed.
        backend = os.environ.get("LOUPE_TEST_PKI_BACKEND", "")
        if not backend:
            try:
                import cryptography  # noqa: F401
            except ImportError:
                backend = "openssl"
            else:
                backend = "cryptography"
        if backend == "cryptography":
            self._generate_cryptography()
        elif backend == "openssl":
            self._generate_openssl()
        else:
            raise ControlPlaneError(f"LOUPE_TEST_PKI_BACKEND={backend!r}: expected cryptography or openssl")
        for key in (self.ca_key, self.server_key, self.admin_key, self.sa_key):
            key.chmod(0o600)

    _SERVER_DNS = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
    # The API server's address on the service network, the first IP of SERVICE_CLUSTER_IP_RANGE.
    _SERVER_IPS = ("127.0.0.1", "10.0.0.1")

    def _generate_cryptography(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        def write_key(path: Path) -> ec.EllipticCurvePrivateKey:
            key = ec.generate_private_key(ec.SECP256R1())
            path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            return key

        def name(common_name: str, organization: str | None = None) -> x509.Name:
            attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
            if organization:
                attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
            return x509.Name(attrs)

        now = datetime.datetime.now(datetime.UTC)
        validity = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=3650))

        def builder(
            subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
        ) -> x509.CertificateBuilder:
            return (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(issuer)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(validity[0])
                .not_valid_after(validity[1])
            )

        def usage(*, cert_sign: bool) -> x509.KeyUsage:
            return x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not cert_sign,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=cert_sign,
                crl_sign=cert_sign,
                encipher_only=False,
                decipher_only=False,
            )

        ca_key = write_key(self.ca_key)
        ca_name = name("loupe-test-ca")
        ca_cert = (
            builder(ca_name, ca_name, ca_key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage(cert_sign=True), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

        server_key = write_key(self.server_key)
        sans: list[x509.GeneralName] = [x509.DNSName(dns) for dns in self._SERVER_DNS]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in self._SERVER_IPS]
        server_cert = (
            builder(name("kube-apiserver"), ca_name, server_key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        self.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))

        admin_key = write_key(self.admin_key)
        admin_cert = (
            builder(name(ADMIN_USER, ADMIN_GROUP), ca_name, admin_key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        self.admin_cert.write_bytes(admin_cert.public_bytes(serialization.Encoding.PEM))

        sa_key = write_key(self.sa_key)
        self.sa_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _generate_openssl(self) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise ControlPlaneError(
                "need the `cryptography` package or the `openssl` command to make the API server's certificates"
            )

        def run(*args: str) -> None:
            result = subprocess.run(
                [openssl, *args], cwd=self.folder, capture_output=True, text=True, timeout=60, check=False
            )
            if result.returncode != 0:
                raise ControlPlaneError(f"openssl {' '.join(args)} failed:\n{result.stderr.strip()}")

        ec_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        days = ("-days", "3650")
        run(
            "req", "-x509", *ec_key, *days, "-subj", "/CN=loupe-test-ca",
            "-keyout", str(self.ca_key), "-out", str(self.ca_cert),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,digitalSignature,keyCertSign,cRLSign",
        )  # fmt: skip

        sans = ",".join([f"DNS:{dns}" for dns in self._SERVER_DNS] + [f"IP:{ip}" for ip in self._SERVER_IPS])
        leaves = (
            ("apiserver", self.server_key, self.server_cert, "/CN=kube-apiserver", "serverAuth", sans),
            ("admin", self.admin_key, self.admin_cert, f"/O={ADMIN_GROUP}/CN={ADMIN_USER}", "clientAuth", ""),
        )
        for stem, key, cert, subject, eku, san in leaves:
            ext = self.folder / f"{stem}.ext"
            lines = [
                "basicConstraints=critical,CA:FALSE",
                "keyUsage=critical,digitalSignature,keyEncipherment",
                f"extendedKeyUsage={eku}",
            ]
            if san:
                lines.append(f"subjectAltName={san}")
            ext.write_text("\n".join(lines) + "\n")
            csr = self.folder / f"{stem}.csr"
            run("req", "-new", *ec_key, "-subj", subject, "-keyout", str(key), "-out", str(csr))
            run(
                "x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert), "-CAkey", str(self.ca_key),
                "-set_serial", str(int.from_bytes(os.urandom(8), "big")), *days, "-sha256",
                "-extfile", str(ext), "-out", str(cert),
            )  # fmt: skip

        run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(self.sa_key))
        run("pkey", "-in", str(self.sa_key), "-pubout", "-out", str(self.sa_pub))


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


# --- the control plane -----------------------------------------------------------------------------
class ControlPlane:
    """etcd + kube-apiserver on 127.0.0.1 (or an existing cluster), and kubectl pointed at it.

    ``start()`` (or entering the ``with`` block) starts both servers on free ports, waits until the API
    server's ``/readyz`` passes and the ``default`` namespace exists, and writes ``kubeconfig_path``.
    ``stop()`` (or leaving the block) stops them and deletes the temporary folder: certificates, etcd's
    data, the logs. Server logs go to ``etcd.log`` and ``kube-apiserver.log`` in that folder
    (``logtail()``); a failed start raises :class:`ControlPlaneError` with their last lines.
    """

    def __init__(
        self,
        *,
        assets_dir: str | os.PathLike[str] | None = None,
        use_existing: bool | None = None,
        startup_timeout: float = 120.0,
        apiserver_args: Sequence[str] = (),
    ) -> None:
        self._assets_dir = Path(assets_dir) if assets_dir is not None else None
        self.use_existing: bool = use_existing_cluster() if use_existing is None else use_existing
        self.startup_timeout = startup_timeout
        self.apiserver_args = tuple(apiserver_args)
        self._workdir: Path | None = None
        self._cleanup: Callable[[], object] | None = None
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._kubeconfig: Path | None = None
        self._server: str | None = None
        self._kubectl: Path | None = None
        self._pki: _Pki | None = None

    # --- where things are ------------------------------------------------------------------------
    @property
    def assets_dir(self) -> Path:
        """The folder with etcd, kube-apiserver and kubectl (found, or built, on first use)."""
        if self._assets_dir is None:
            self._assets_dir = find_assets()
        return self._assets_dir

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._workdir

    @property
    def kubeconfig_path(self) -> Path:
        """A kubeconfig for an admin of this cluster (its one context is the current one)."""
        if self._kubeconfig is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._kubeconfig

    @property
    def server(self) -> str:
        """The API server's URL, ``https://127.0.0.1:<port>``."""
        if self._server is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._server

    @property
    def kubectl_path(self) -> Path:
        if self._kubectl is None:
            self._kubectl = _find_kubectl() if self.use_existing else self.assets_dir / "kubectl"
        return self._kubectl

    @property
    def etcd_log(self) -> Path:
        return self.workdir / "etcd.log"

    @property
    def apiserver_log(self) -> Path:
        return self.workdir / "kube-apiserver.log"

    @property
    def is_running(self) -> bool:
        if self.use_existing:
            return self._kubeconfig is not None
        return all(proc is not None and proc.poll() is None for proc in (self._etcd, self._apiserver))

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._kubeconfig is not None:
            return self
        self._workdir = Path(tempfile.mkdtemp(prefix="loupe-k8s-"))
        # Deletes the work dir on stop(), or when this object is garbage-collected unstopped.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._workdir, ignore_errors=True)
        try:
            if self.use_existing:
                self._use_existing()
            else:
                self._start_servers()
        except BaseException:
            self.stop()
            raise
        return self

    def _use_existing(self) -> None:
        env_paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        default = Path.home() / ".kube" / "config"
        if not env_paths and not default.is_file():
            raise ControlPlaneError(
                "LOUPE_TEST_USE_EXISTING_CLUSTER is set, but neither KUBECONFIG nor ~/.kube/config names a cluster"
            )
        # The current context, flattened into one self-contained file, so later changes to the user's
        # kubeconfig do not move the tests to another cluster.
        result = subprocess.run(
            [str(self.kubectl_path), "config", "view", "--raw", "--minify", "--flatten", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=_KUBECTL_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise ControlPlaneError(f"kubectl config view failed: {result.stderr.strip()}")
        config = json.loads(result.stdout)
        clusters = config.get("clusters") or []
        if not clusters:
            raise ControlPlaneError("the current kubeconfig context names no cluster")
        self._server = str(clusters[0]["cluster"]["server"])
        path = self.workdir / "kubeconfig"
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        self._kubeconfig = path
        check = self.kubectl("get", "--raw", "/readyz")
        if check.returncode != 0:
            self._kubeconfig = None
            raise ControlPlaneError(
                f"the existing cluster at {self._server} is not ready: {check.stderr.strip()}"
            )

    def _start_servers(self) -> None:
        assets = self.assets_dir
        self._pki = _Pki(self.workdir / "pki")
        self._pki.generate()
        last_error: ControlPlaneError | None = None
        for _attempt in range(3):
            etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
            try:
                etcd_url = self._start_etcd(assets / "etcd", etcd_port, peer_port)
                self._start_apiserver(assets / "kube-apiserver", api_port, etcd_url)
                self._write_kubeconfig(api_port)
                self._wait_ready()
                return
            except ControlPlaneError as exc:
                self._terminate()
                logs = tail(self.etcd_log, 200) + tail(self.apiserver_log, 200)
                if "address already in use" not in logs:
                    raise
                last_error = exc  # lost a race for a port we picked: try other ports
                self._kubeconfig = self._server = None
        assert last_error is not None
        raise last_error

    def _spawn(self, cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            log.write(f"\n--- {time.strftime('%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={k: v for k, v in os.environ.items() if not k.startswith("ETCD_")},
                start_new_session=True,  # own process group: stop() signals the whole group
            )
        live_processes.add(proc)
        return proc

    def _start_etcd(self, binary: Path, client_port: int, peer_port: int) -> str:
        data_dir = self.workdir / "etcd-data"
        shutil.rmtree(data_dir, ignore_errors=True)
        client_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        cmd = [
            str(binary),
            "--name=loupe",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=loupe={peer_url}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync",  # test data: speed over durability
            "--log-level=warn",
        ]
        self._etcd = self._spawn(cmd, self.etcd_log)
        self._wait_http(
            self._etcd, "etcd", f"{client_url}/health", ssl_context=None, expect=b'"health":"true"'
        )
        return client_url

    def _start_apiserver(self, binary: Path, port: int, etcd_url: str) -> None:
        pki = self._pki
        assert pki is not None
        cmd = [
            str(binary),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.server_cert}",
            f"--tls-private-key-file={pki.server_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer=https://127.0.0.1:{port}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            # The `kubernetes` Service cannot have a loopback endpoint; without this the server retries
            # (and logs an error) every 10 s.
            "--endpoint-reconciler-type=none",
            # No controller-manager creates the `default` ServiceAccounts, so pods could not be admitted.
            "--disable-admission-plugins=ServiceAccount",
            "--profiling=false",
            "--v=1",
            *self.apiserver_args,
        ]
        self._apiserver = self._spawn(cmd, self.apiserver_log)
        self._server = f"https://127.0.0.1:{port}"

    def _write_kubeconfig(self, port: int) -> None:
        pki = self._pki
        assert pki is not None
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "loupe-test",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "certificate-authority-data": _b64(pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": ADMIN_USER,
                    "user": {
                        "client-certificate-data": _b64(pki.admin_cert),
                        "client-key-data": _b64(pki.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "loupe-test",
                    "context": {"cluster": "loupe-test", "user": ADMIN_USER, "namespace": "default"},
                }
            ],
            "current-context": "loupe-test",
            "preferences": {},
        }
        path = self.workdir / "kubeconfig"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML: any kubeconfig reader takes it
        path.chmod(0o600)
        self._kubeconfig = path

    def _admin_ssl_context(self) -> ssl.SSLContext:
        pki = self._pki
        assert pki is not None
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        return context

    def _wait_ready(self) -> None:
        """Wait for ``/readyz`` and for the ``default`` namespace (made by a post-start controller)."""
        proc = self._apiserver
        assert proc is not None
        context = self._admin_ssl_context()
        self._wait_http(proc, "kube-apiserver", f"{self.server}/readyz", ssl_context=context, expect=b"ok")
        self._wait_http(
            proc, "kube-apiserver", f"{self.server}/api/v1/namespaces/default", ssl_context=context
        )

    def _wait_http(
        self,
        proc: subprocess.Popen[bytes],
        name: str,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None,
        expect: bytes = b"",
    ) -> None:
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]  # never via a proxy
        if ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context))

        def not_ready(response: HTTPResponse, body: bytes) -> str | None:
            return None if expect in body else f"HTTP {response.status}: {body[:200]!r}"

        wait_http_ready(
            proc, name, url, opener=urllib.request.build_opener(*handlers), timeout=self.startup_timeout,
            not_ready=not_ready, error=ControlPlaneError, log_excerpt=self._log_excerpt,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the servers (SIGTERM, then SIGKILL) and delete the temporary folder with all their data."""
        self._terminate()
        self._kubeconfig = None
        self._server = None
        if self._cleanup is not None:
            self._cleanup()
        self._cleanup = None
        self._workdir = None

    def _terminate(self) -> None:
        # The API server first: it would otherwise retry a vanished etcd for a while.
        for attr in ("_apiserver", "_etcd"):
            proc: subprocess.Popen[bytes] | None = getattr(self, attr)
            if proc is None:
                continue
            stop_group(proc, _STOP_TIMEOUT_S)
            setattr(self, attr, None)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- logs ------------------------------------------------------------------------------------
    def logtail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of etcd's and of the API server's log."""
        if self._workdir is None:
            return ""
        return (
            f"--- last lines of {self.etcd_log} ---\n{tail(self.etcd_log, lines)}\n"
            f"--- last lines of {self.apiserver_log} ---\n{tail(self.apiserver_log, lines)}"
        )

    def _log_excerpt(self) -> str:
        return self.logtail()

    # --- kubectl ---------------------------------------------------------------------------------
    def kubectl(
        self,
        *args: str | os.PathLike[str],
        input: str | None = None,
        check: bool = False,
        timeout: float = _KUBECTL_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl --kubeconfig <kubeconfig_path> <args>``; ``check=True`` raises on a non-zero exit."""
        cmd = [
            str(self.kubectl_path),
            f"--kubeconfig={self.kubeconfig_path}",
            f"--cache-dir={self.workdir / 'kube-cache'}",
            *(os.fspath(arg) for arg in args),
        ]
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        try:
            result = subprocess.run(
                cmd, input=input, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ControlPlaneError(
                f"`kubectl {' '.join(cmd[3:])}` did not finish in {timeout:.0f}s"
            ) from exc
        if check and result.returncode != 0:
            raise ControlPlaneError(
                f"`kubectl {' '.join(cmd[3:])}` failed (exit {result.returncode}):\n"
                f"{result.stderr.strip()}\n{result.stdout.strip()}"
            )
        return result

    def patch_status(self, kind: str, name: str, namespace: str, status: dict[str, Any]) -> None:
        """Merge-patch an object's status subresource, as its controller would."""
        self.kubectl("patch", kind, name, "-n", namespace, "--subresource=status", "--type=merge",
                     "-p", json.dumps({"status": status}), check=True)  # fmt: skip

    def apply(
        self,
        manifest: str | os.PathLike[str],
        server_side: bool = False,
        *,
        namespace: str | None = None,
        args: Sequence[str] = (),
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply`` a file or folder (a path) or YAML text (a ``str`` that is not an existing path).

        ``server_side=True`` applies server-side (needed for CRDs too large for the last-applied
        annotation) and takes ownership of conflicting fields. ``check=False`` returns a failed run
        instead of raising, for tests that expect the API server to refuse the manifest.
        """
        cmd: list[str] = ["apply"]
        if server_side:
            cmd += ["--server-side", "--force-conflicts"]
        if namespace is not None:
            cmd += ["--namespace", namespace]
        cmd += list(args)
        text = None
        if isinstance(manifest, str) and ("\n" in manifest or not Path(manifest).exists()):
            text = manifest
            cmd += ["-f", "-"]
        else:
            cmd += ["-f", os.fspath(manifest)]
        return self.kubectl(*cmd, input=text, check=check)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a child process (an operator, a CLI) that should talk to this cluster."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig_path)
        return env

    def wait_crds_established(self, *names: str, timeout: float = 60.0) -> None:
        """Wait until every named CustomResourceDefinition is Established (its API is served).

        Polls rather than ``kubectl wait``, which fails outright on a CRD that has no conditions yet.
        """
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            result = self.kubectl("get", "customresourcedefinitions", *pending, "-o", "json")
            if result.returncode == 0:
                got = json.loads(result.stdout)
                items = got.get("items", []) if got.get("kind") == "List" else [got]  # one name: no List
                established = {
                    item["metadata"]["name"]
                    for item in items
                    if any(
                        c.get("type") == "Established" and c.get("status") == "True"
                        for c in (item.get("status") or {}).get("conditions") or []
                    )
                }
                pending = [name for name in pending if name not in established]
                if not pending:
                    return
            if time.monotonic() >= deadline:
                detail = result.stderr.strip() if result.returncode else "not Established"
                raise ControlPlaneError(
                    f"CustomResourceDefinitions {', '.join(pending)} not Established after {timeout:.0f}s: {detail}"
                )
            time.sleep(0.2)

    def server_version(self) -> str:
        """The API server's ``gitVersion`` (``kubectl version -o json``), e.g. ``v1.34.4``."""
        out = self.kubectl("version", "-o", "json", check=True).stdout
        version: str = json.loads(out)["serverVersion"]["gitVersion"]
        return version
