#!/usr/bin/env bash
# Loupe on a local kind cluster: builds the operator and worker images, creates the cluster, installs
# KubeRay and MinIO, installs Loupe with Helm, uploads the quickstart images to MinIO and applies
# examples/02-s3-kuberay, then waits for the first dataset version.
#
# Needs Docker, kind, kubectl and helm on PATH. Re-running it reuses what exists.
#   bash examples/kind/up.sh          # everything
#   bash examples/kind/up.sh down     # delete the cluster
# Settings (environment): CLUSTER (loupe), KIND_NODE_IMAGE (kind's default), KUBERAY_VERSION (1.6.1),
# MINIO_IMAGE, TAG (dev), TIMEOUT (20m).
set -euo pipefail

CLUSTER="${CLUSTER:-loupe}"
KUBERAY_VERSION="${KUBERAY_VERSION:-1.6.1}"
MINIO_IMAGE="${MINIO_IMAGE:-quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z}"
TAG="${TAG:-dev}"
TIMEOUT="${TIMEOUT:-20m}"
OPERATOR_IMAGE="loupe-operator:${TAG}"
WORKER_IMAGE="loupe-worker:${TAG}"
# Keys of the demo MinIO; examples/02-s3-kuberay/dataset.yaml holds the same ones.
MINIO_USER="loupe"
MINIO_PASSWORD="loupe-demo-secret"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
context="kind-${CLUSTER}"

log() { printf '\n==> %s\n' "$*"; }

kc() { kubectl --context "${context}" "$@"; }

need() {
    local tool
    for tool in "$@"; do
        command -v "${tool}" >/dev/null 2>&1 || {
            printf 'up.sh: %s is required but not on PATH\n' "${tool}" >&2
            exit 1
        }
    done
}

create_cluster() {
    if kind get clusters | grep -qx "${CLUSTER}"; then
        log "kind cluster ${CLUSTER} exists"
        return
    fi
    log "creating kind cluster ${CLUSTER}"
    local -a image=()
    [[ -z "${KIND_NODE_IMAGE:-}" ]] || image=(--image "${KIND_NODE_IMAGE}")
    kind create cluster --name "${CLUSTER}" "${image[@]}" --wait 120s
}

build_images() {
    log "building ${OPERATOR_IMAGE} and ${WORKER_IMAGE}"
    docker build -f "${repo}/operator/Dockerfile" -t "${OPERATOR_IMAGE}" "${repo}"
    docker build -f "${repo}/workers/Dockerfile" -t "${WORKER_IMAGE}" "${repo}"
    kind load docker-image --name "${CLUSTER}" "${OPERATOR_IMAGE}" "${WORKER_IMAGE}"
}

install_kuberay() {
    log "installing the KubeRay operator ${KUBERAY_VERSION}"
    helm repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update >/dev/null
    helm upgrade --install kuberay-operator kuberay/kuberay-operator --kube-context "${context}" \
        --version "${KUBERAY_VERSION}" --namespace kuberay-system --create-namespace --wait
}

install_minio() {
    log "installing MinIO (buckets raw and loupe)"
    kc create namespace minio --dry-run=client -o yaml | kc apply -f -
    kc -n minio create secret generic minio-root \
        --from-literal=MINIO_ROOT_USER="${MINIO_USER}" --from-literal=MINIO_ROOT_PASSWORD="${MINIO_PASSWORD}" \
        --dry-run=client -o yaml | kc apply -f -
    kc apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: minio, namespace: minio, labels: {app: minio}}
spec:
  replicas: 1
  selector: {matchLabels: {app: minio}}
  template:
    metadata: {labels: {app: minio}}
    spec:
      containers:
        - name: minio
          image: ${MINIO_IMAGE}
          args: [server, /data, --console-address, ":9001"]
          envFrom: [{secretRef: {name: minio-root}}]
          ports: [{containerPort: 9000}]
          readinessProbe: {httpGet: {path: /minio/health/ready, port: 9000}}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: minio, namespace: minio}
spec:
  selector: {app: minio}
  ports: [{name: s3, port: 9000, targetPort: 9000}]
EOF
    kc -n minio rollout status deployment/minio --timeout=180s
}

install_loupe() {
    log "installing Loupe (charts/loupe)"
    # The default store's keys are looked up in each Dataset's namespace: examples/02-s3-kuberay
    # creates the Secret minio-credentials in namespace vision.
    helm upgrade --install loupe "${repo}/charts/loupe" --kube-context "${context}" --namespace loupe-system \
        --create-namespace \
        --set image.repository=loupe-operator --set image.tag="${TAG}" --set image.pullPolicy=Never \
        --set worker.image="${WORKER_IMAGE}" --set ray.mode=kuberay \
        --set storage.default=s3://loupe/ --set storage.endpoint=http://minio.minio.svc:9000 \
        --set storage.region=us-east-1 --set storage.credentialsSecret=minio-credentials \
        --set logFormat=text --wait --timeout 5m
}

# The demo images are made by `loupe demo` inside the worker image and uploaded with boto3, by a Job
# in the cluster: no Python is needed on this machine.
upload_quickstart() {
    log "uploading the quickstart images to s3://raw/quickstart/"
    kc -n minio delete job upload-quickstart --ignore-not-found
    kc apply -f - <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: upload-quickstart, namespace: minio}
spec:
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: upload
          image: ${WORKER_IMAGE}
          imagePullPolicy: Never
          envFrom: [{secretRef: {name: minio-root}}]
          command: [bash, -c]
          args:
            - |
              set -euo pipefail
              loupe demo /tmp/images
              python - <<'PY'
              import os, pathlib, boto3
              s3 = boto3.client("s3", endpoint_url="http://minio.minio.svc:9000", region_name="us-east-1",
                                aws_access_key_id=os.environ["MINIO_ROOT_USER"],
                                aws_secret_access_key=os.environ["MINIO_ROOT_PASSWORD"])
              for bucket in ("raw", "loupe"):
                  if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
                      s3.create_bucket(Bucket=bucket)
              root = pathlib.Path("/tmp/images")
              files = [p for p in root.rglob("*") if p.is_file()]
              for path in files:
                  s3.upload_file(str(path), "raw", "quickstart/" + path.relative_to(root).as_posix())
              print(f"uploaded {len(files)} files")
              PY
EOF
    kc -n minio wait --for=condition=complete job/upload-quickstart --timeout=600s
    kc -n minio logs job/upload-quickstart | tail -n 1
}

run_quickstart() {
    log "applying examples/02-s3-kuberay and waiting for version 1.0.0 (up to ${TIMEOUT})"
    kc apply -f "${repo}/examples/02-s3-kuberay/dataset.yaml"
    kc -n vision wait --for=condition=Ready ingestsource/line-a-cameras --timeout=300s
    kc -n vision wait --for=condition=Ready dataset/defects --timeout="${TIMEOUT}"
    kc -n vision get ingestsources,datasets,rayjobs
    printf '\nLoupe runs on kind cluster %s. Try:\n' "${CLUSTER}"
    printf '  kubectl --context %s -n vision get dataset defects -o yaml\n' "${context}"
    printf '  kubectl --context %s -n loupe-system logs deployment/loupe\n' "${context}"
    printf '  bash examples/kind/up.sh down\n'
}

main() {
    if [[ "${1:-}" == "down" ]]; then
        need kind
        kind delete cluster --name "${CLUSTER}"
        return
    fi
    need docker kind kubectl helm
    create_cluster
    build_images
    install_kuberay
    install_minio
    install_loupe
    upload_quickstart
    run_quickstart
}

main "$@"
