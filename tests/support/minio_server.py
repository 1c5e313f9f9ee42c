"""A real MinIO S3 server for tests, started as a child process on loopback ports.

The binary comes from ``$LOUPE_MINIO_BIN`` or else from ``bash .ci/tools.sh minio``, which builds the
pinned MinIO from the Go module proxy into ``${LOUPE_TOOLS_CACHE:-~/.cache/loupe-tools}`` on first use.

    with MinioServer() as s3:
        s3.make_bucket("loupe")
        s3.client().put_object(Bucket="loupe", Key="k", Body=b"v")
        s3.pause()    # S3 hangs (SIGSTOP): requests time out
        s3.resume()
        s3.stop()     # S3 is gone: connections are refused
        s3.start()    # back, same port, same data

The server runs in its own process group; ``stop()`` terminates the whole group, and any server still
running when the interpreter exits is killed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from http.client import HTTPResponse
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from support.processes import free_port, live_processes, signal_group, stop_group, tail, wait_http_ready

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_SCRIPT = REPO_ROOT / ".ci" / "tools.sh"

DEFAULT_ACCESS_KEY = "loupe-test-access"
DEFAULT_SECRET_KEY = "loupe-test-secret-key"
REGION = "us-east-1"

# Building MinIO from source the first time takes several minutes on a small machine.
_BUILD_TIMEOUT_S = 1800.0
_STOP_TIMEOUT_S = 10.0


class MinioError(RuntimeError):
    """MinIO could not be found, built or started."""


@functools.cache
def find_minio_binary() -> Path:
    """The MinIO server binary: ``$LOUPE_MINIO_BIN``, else the cached build (built now if missing)."""
    override = os.environ.get("LOUPE_MINIO_BIN")
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise MinioError(f"LOUPE_MINIO_BIN={override} is not an executable file")
        return path
    try:
        result = subprocess.run(
            ["bash", str(TOOLS_SCRIPT), "minio"],
            capture_output=True,
            text=True,
            timeout=_BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise MinioError(f"`bash {TOOLS_SCRIPT} minio` did not finish in {_BUILD_TIMEOUT_S:.0f}s") from exc
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        tail = "\n".join(result.stderr.strip().splitlines()[-30:])
        raise MinioError(
            f"`bash {TOOLS_SCRIPT} minio` failed (exit {result.returncode}); set LOUPE_MINIO_BIN to a "
            f"MinIO server binary to skip the build.\n{tail}"
        )
    path = Path(lines[-1])
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MinioError(f"`bash {TOOLS_SCRIPT} minio` printed {path}, which is not an executable file")
    return path


class MinioServer:
    """One single-drive MinIO server on 127.0.0.1, with its data in ``data_dir``.

    ``data_dir`` defaults to a fresh temporary directory that ``close()`` (and leaving the ``with``
    block) deletes; a directory passed in is kept. Ports are picked free at the first ``start()`` and
    kept for the life of the object, so ``stop()`` + ``start()`` (or ``restart()``) brings the same
    endpoint back with the same data.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        binary: str | os.PathLike[str] | None = None,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        port: int | None = None,
        console_port: int | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="loupe-minio-"))
        # Deletes the work dir on close(), or when this object is garbage-collected unclosed.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._workdir, ignore_errors=True)
        self.data_dir: Path = self._workdir / "data" if data_dir is None else Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path: Path = self._workdir / "minio.log"
        self._certs_dir = self._workdir / "certs"  # empty: plain HTTP whatever ~/.minio/certs holds
        self._certs_dir.mkdir()
        self._binary = Path(binary) if binary is not None else None
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = REGION
        self.startup_timeout = startup_timeout
        self._port = port
        self._console_port = console_port
        self._ports_chosen = port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._paused = False

    # --- addresses -------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._port is None:
            raise MinioError("the server has not been started yet, so it has no port")
        return self._port

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``, for boto3's ``endpoint_url``."""
        return f"http://{self.host}:{self.port}"

    @property
    def binary(self) -> Path:
        if self._binary is None:
            self._binary = find_minio_binary()
        return self._binary

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_paused(self) -> bool:
        return self._paused

    def start(self) -> Self:
        """Start the server (same ports and data as before after a ``stop()``) and wait until ready."""
        if self.is_running:
            return self
        binary = self.binary
        attempts = 1 if self._ports_chosen else 3
        for attempt in range(attempts):
            if not self._ports_chosen:
                self._port, self._console_port = free_port(), free_port()
            try:
                self._spawn(binary)
                self.wait_ready(self.startup_timeout)
            except MinioError:
                self._terminate()
                if attempt + 1 < attempts and "already in use" in self._log_since_spawn().lower():
                    continue  # lost a race for the port we picked: try other ports
                raise
            break
        self._ports_chosen = True
        return self

    def _spawn(self, binary: Path) -> None:
        if self._console_port is None:
            self._console_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINIO_")}
        env.update(
            MINIO_ROOT_USER=self.access_key,
            MINIO_ROOT_PASSWORD=self.secret_key,
            MINIO_REGION=self.region,
            MINIO_BROWSER="off",  # no web console: nothing here uses it, and it starts faster
            MINIO_UPDATE="off",
            MINIO_CALLHOME_ENABLE="off",
        )
        cmd = [
            str(binary),
            "server",
            str(self.data_dir),
            "--address",
            f"{self.host}:{self.port}",
            "--console-address",
            f"{self.host}:{self._console_port}",
            "--certs-dir",
            str(self._certs_dir),
        ]
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            log.write(f"\n--- {time.strftime('%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: stop() signals the whole group
            )
        self._paused = False
        live_processes.add(self._proc)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll ``/minio/health/live`` until the server answers 200 with its object layer up."""
        proc = self._proc
        if proc is None:
            raise MinioError("the server is not started")

        def not_ready(response: HTTPResponse, _: bytes) -> str | None:
            # MinIO answers 200 before its object layer is up, flagged by this header.
            offline = response.headers.get("x-minio-server-status") == "offline"
            return "server up, object layer still initialising" if offline else None

        wait_http_ready(
            proc, "MinIO", f"{self.endpoint}/minio/health/live",
            opener=urllib.request.build_opener(urllib.request.ProxyHandler({})),  # never via a proxy
            timeout=timeout, not_ready=not_ready, error=MinioError, log_excerpt=self._log_excerpt,
            request_timeout=2.0, interval=0.1,
        )  # fmt: skip

    def stop(self) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL); the data stays."""
        self._terminate()

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        stop_group(proc, _STOP_TIMEOUT_S, resume=True)  # a paused server must run to handle SIGTERM
        self._proc = None
        self._paused = False

    def restart(self) -> Self:
        """``stop()`` then ``start()``: same endpoint, same data."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it keeps its port but answers nothing, so requests time out."""
        proc = self._require_running()
        signal_group(proc, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Undo ``pause()`` (SIGCONT)."""
        proc = self._require_running()
        signal_group(proc, signal.SIGCONT)
        self._paused = False

    def close(self) -> None:
        """``stop()``, then delete the temporary directory (and the data, unless ``data_dir`` was given)."""
        self.stop()
        # The work dir holds the log, the empty certs dir and, when we created it, the data.
        self._cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _require_running(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise MinioError("the server is not running")
        return proc

    # --- logs ------------------------------------------------------------------------------------
    def logtail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's combined stdout/stderr."""
        return tail(self.log_path, lines)

    def _log_since_spawn(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_excerpt(self) -> str:
        return f"--- last lines of {self.log_path} ---\n{self.logtail()}"

    # --- S3 --------------------------------------------------------------------------------------
    def client(
        self,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
    ) -> S3Client:
        """A boto3 S3 client for this server: SigV4, ``us-east-1``, path-style addressing."""
        import boto3
        from botocore.config import Config

        config = Config(
            signature_version="s3v4",
            region_name=self.region,
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=config,
        )

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (fine if it already exists) and return the name."""
        s3 = self.client()
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)
        return name
