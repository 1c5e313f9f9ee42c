"""Process plumbing shared by the test servers: free ports, process groups, cleanup, log tails."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.client import HTTPResponse
from pathlib import Path

# Servers started by the tests, killed at interpreter exit if a test forgot to stop them.
live_processes: set[subprocess.Popen[bytes]] = set()


def signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the process group a server was started in (start_new_session=True)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _kill_leftovers() -> None:
    for proc in list(live_processes):
        signal_group(proc, signal.SIGKILL)
    live_processes.clear()


atexit.register(_kill_leftovers)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file ('' when it does not exist yet)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 10.0, *, resume: bool = False) -> None:
    """SIGTERM a server's process group, SIGKILL it after ``timeout`` s, then kill anything left in
    the group. ``resume``: send SIGCONT too, so that a paused (SIGSTOP) server can handle the SIGTERM."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        if resume:
            signal_group(proc, signal.SIGCONT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=timeout)
    signal_group(proc, signal.SIGKILL)  # anything left in the group
    live_processes.discard(proc)


def wait_http_ready(
    proc: subprocess.Popen[bytes],
    name: str,
    url: str,
    *,
    opener: urllib.request.OpenerDirector,
    timeout: float,
    not_ready: Callable[[HTTPResponse, bytes], str | None],
    error: type[Exception],
    log_excerpt: Callable[[], str],
    request_timeout: float = 5.0,
    interval: float = 0.2,
) -> None:
    """Poll ``url`` until ``not_ready(response, body)`` returns None; raise ``error`` with the log
    excerpt when the process exits or ``timeout`` s pass (the last answer says why)."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while True:
        code = proc.poll()
        if code is not None:
            raise error(f"{name} exited with code {code} while starting.\n{log_excerpt()}")
        try:
            with opener.open(url, timeout=request_timeout) as resp:
                reason = not_ready(resp, resp.read())
                if reason is None:
                    return
                last_error = reason
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        if time.monotonic() >= deadline:
            raise error(
                f"{name} was not ready at {url} after {timeout:.0f}s (last: {last_error}).\n{log_excerpt()}"
            )
        time.sleep(interval)
