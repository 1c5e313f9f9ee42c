"""Write or check the generated CustomResourceDefinitions in crds/.

python tests/crd_tool.py write   # regenerate crds/*.yaml from loupe_api (and the chart's copy)
python tests/crd_tool.py check   # exit 1 if crds/ differs from what loupe_api generates
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from loupe_api.crd import all_crds

CRD_DIR = Path(__file__).resolve().parent.parent / "crds"
HEADER = "# Generated from loupe_api by tests/crd_tool.py; do not edit.\n"
WRITE_HINT = "run `python tests/crd_tool.py write` (from the repository root) and commit crds/"


def render(crd: dict[str, Any]) -> str:
    """The YAML text of one CRD file: the header comment, then the document in generation order."""
    body = yaml.safe_dump(crd, sort_keys=False, default_flow_style=False, width=100, allow_unicode=True)
    return HEADER + body


def expected_files() -> dict[str, str]:
    """File name in crds/ -> expected content, for every CRD."""
    return {f"{crd['metadata']['name']}.yaml": render(crd) for crd in all_crds()}


def stale_files() -> list[str]:
    """Names of the crds/*.yaml files that are missing, out of date, or not generated at all."""
    expected = expected_files()
    present = {path.name for path in CRD_DIR.glob("*.yaml")}
    problems = [
        name
        for name, text in expected.items()
        if name not in present or (CRD_DIR / name).read_text(encoding="utf-8") != text
    ]
    problems.extend(sorted(f"{name} (not generated)" for name in present - expected.keys()))
    return problems


def write() -> list[str]:
    """Write every CRD file; returns the names of the files that changed."""
    CRD_DIR.mkdir(exist_ok=True)
    changed = []
    for name, text in expected_files().items():
        path = CRD_DIR / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(name)
    return changed


def main(argv: list[str]) -> int:
    if argv == ["write"]:
        changed = write()
        print("\n".join(f"wrote crds/{name}" for name in changed) or "crds/ is up to date")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from support.chart import write_generated  # the chart ships a copy of the CRDs

        write_generated()
        return 0
    if argv == ["check"]:
        stale = stale_files()
        if stale:
            print(f"crds/ is out of date: {', '.join(stale)}; {WRITE_HINT}", file=sys.stderr)
            return 1
        print("crds/ is up to date")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
