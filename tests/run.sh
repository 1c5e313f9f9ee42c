#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs uv if missing, the locked environment, the real
# servers the tests need (MinIO, kube-apiserver, etcd and kubectl, KubeRay's CRDs: built from the Go
# module proxy and cached outside the checkout), then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet --user uv
    export PATH="$HOME/.local/bin:$PATH"
fi
uv sync --frozen --python 3.11 --quiet
echo "minio: $(bash .ci/tools.sh minio)"
KUBEBUILDER_ASSETS="${KUBEBUILDER_ASSETS:-$(bash .ci/tools.sh assets)}"
export KUBEBUILDER_ASSETS
echo "control plane: ${KUBEBUILDER_ASSETS}"
echo "kuberay: $(bash .ci/tools.sh kuberay-crds)"
exec uv run --frozen --no-sync pytest "$@"
