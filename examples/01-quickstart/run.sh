#!/usr/bin/env bash
# Quickstart on the embedded default (local Ray, local folder store): installs Loupe, writes a demo
# folder of real photos with duplicates and faults, builds a dataset version twice (the second run
# changes nothing), and shows the result.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet --user uv
    export PATH="$HOME/.local/bin:$PATH"
fi
uv sync --frozen --python 3.11 --quiet
loupe="$PWD/.venv/bin/loupe"
cd "$here"
rm -rf images images-truth.json .loupe
"$loupe" demo images
"$loupe" run -f loupe.yaml
"$loupe" run -f loupe.yaml
"$loupe" versions defects
"$loupe" show defects
