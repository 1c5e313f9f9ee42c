"""The CLI's exit status is the command's, never a native library's teardown.

CI once saw a finished run (version written, JSON printed) exit 250 through a runner: pyarrow's thread
pool aborted the process at exit ("terminate called without an active exception", apache/arrow#34314).
The console script now runs Python's exit handlers, flushes its output and leaves without running native
destructors. Here a native exit handler that aborts stands in for that teardown.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# A C-level exit handler that aborts, as a C++ static destructor that terminates would; and a Python one
# that must still run (Ray's shutdown and temporary folders are cleaned up that way).
_SCRIPT = """
import atexit, ctypes, sys
from pathlib import Path
libc = ctypes.CDLL("libc.so.6")
libc.__cxa_atexit(ctypes.cast(libc.abort, ctypes.c_void_p), None, None)  # how C++ registers destructors
marker = Path(sys.argv[1])
atexit.register(lambda: marker.write_text("python exit handlers ran"))
from loupe_workers.cli import main as cli
sys.argv = ["loupe", *sys.argv[2:]]
if sys.argv[1:] == ["--native-abort-control"]:
    sys.exit(0)  # a normal exit: the native handler aborts
cli.main()
"""


def _loupe(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    marker = tmp_path / "marker"
    marker.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(marker), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    return done, marker


def test_the_stand_in_aborts_a_normal_exit(tmp_path: Path) -> None:
    done, marker = _loupe(tmp_path, "--native-abort-control")
    assert done.returncode == -6, done  # SIGABRT: what the CLI must be immune to
    assert marker.exists()


@pytest.mark.parametrize(
    ("args", "code", "stream", "text"),
    [
        (("--help",), 0, "stdout", "Usage"),
        (("show", "nosuch", "--store", "store"), 1, "stderr", "error: dataset nosuch has no versions"),
        (("no-such-command",), 2, "stderr", "No such command"),
    ],
)
def test_exit_status_is_the_commands_with_output_flushed_and_handlers_run(
    tmp_path: Path, args: tuple[str, ...], code: int, stream: str, text: str
) -> None:
    done, marker = _loupe(tmp_path, *args)
    assert done.returncode == code, done
    assert text in getattr(done, stream), done  # a pipe is block-buffered: lost unless flushed
    assert marker.read_text() == "python exit handlers ran"
