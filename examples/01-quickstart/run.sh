#!/usr/bin/env bash
# Quickstart on the embedded default (local folder store, work in this process or local workers): installs Loupe, writes a demo
# folder of real photos with duplicates and faults, builds a dataset version twice (the second run
# changes nothing), shows the result, searches it by text, writes an HTML report and prints how to
# browse the version with loupe serve.
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
"$loupe" search defects --text cat --limit 3           # text-to-image search (downloads the models once)
"$loupe" report defects --out report.html -f loupe.yaml  # one self-contained HTML page: open it in a browser
echo "Browse the version in a web browser: $loupe serve -f $here/loupe.yaml"
echo "  then open the http://127.0.0.1:8765/ address it prints (--port 0 picks a free port; Ctrl-C stops it)"
