"""Process plumbing shared by the test servers: free ports, process groups, cleanup, log tails."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
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
