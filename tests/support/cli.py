"""The real `loupe` command line run as users run it, and the quickstart project built with it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "01-quickstart" / "loupe.yaml"


def loupe(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`loupe ARGS` in a fresh interpreter, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "loupe_workers.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def quickstart_project(root: Path, images: Path) -> Path:
    """The quickstart spec over a copy of ``images``, versioned once inline; returns the project folder
    (its store is ``root / ".loupe"``)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(images, root / "images")
    shutil.copy(QUICKSTART, root / "loupe.yaml")
    done = loupe("run", "-f", "loupe.yaml", "--executor", "inline", "--json", cwd=root)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["created"], done.stdout
    return root


def link_folders(source: Path, project: Path, folders: tuple[str, ...]) -> Path:
    """A project folder whose ``folders`` link to those of ``source`` (photos written once per module)."""
    for folder in folders:
        (project / folder).symlink_to(source / folder, target_is_directory=True)
    return project


def run_spec(project: Path, text: str) -> subprocess.CompletedProcess[str]:
    """`loupe run --json` inline of ``text`` written as the project's loupe.yaml, into its ``store``."""
    (project / "loupe.yaml").write_text(text, encoding="utf-8")
    return loupe("run", "-f", "loupe.yaml", "--store", "store", "--executor", "inline", "--json", cwd=project)


def show_json(project: Path, ref: str) -> dict[str, Any]:
    """`loupe show REF --json` of the project's ``store``; it must succeed."""
    shown = loupe("show", ref, "--store", "store", "--json", cwd=project)
    assert shown.returncode == 0, shown.stderr
    result: dict[str, Any] = json.loads(shown.stdout)
    return result
