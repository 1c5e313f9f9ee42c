#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs uv if missing, the locked environment, the real
# servers and tools the tests need (MinIO, kube-apiserver, etcd, kubectl, helm, KubeRay's and
# prometheus-operator's CRDs: built or fetched from the Go module proxy and cached outside the
# checkout; headless Chromium from Debian's packages), then runs pytest. Extra arguments go to pytest.
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
echo "helm: $(bash .ci/tools.sh helm) (ServiceMonitor CRD: $(bash .ci/tools.sh servicemonitor-crd))"
echo "chromium: $(bash .ci/tools.sh chromium)"
LOUPE_PILLOW_IMAGES="${LOUPE_PILLOW_IMAGES:-$(bash .ci/tools.sh pillow-images)}"; export LOUPE_PILLOW_IMAGES; echo "pillow images: ${LOUPE_PILLOW_IMAGES}"
exec uv run --frozen --no-sync pytest "$@"
