#!/usr/bin/env bash
# Real third-party servers for Loupe's tests and CI, built from the Go module proxy.
#
# Usage (run):     bash .ci/tools.sh <tool>...        e.g. bash .ci/tools.sh minio
#        (source): source .ci/tools.sh && loupe_tool minio
#
# Each <tool> subcommand makes sure the tool's binary exists in the cache and prints its absolute
# path (one line per tool on stdout; build progress goes to stderr). Binaries are cached outside the
# checkout, keyed by pinned version:
#
#   ${LOUPE_TOOLS_CACHE:-$HOME/.cache/loupe-tools}/<tool>/<version>/<binary>
#
# Tools:
#   minio            MinIO S3 server
#   kube-apiserver   Kubernetes API server   } built together from k8s.io/kubernetes into one folder,
#   kubectl          Kubernetes CLI          } kubernetes/<version>/, laid out as envtest's
#   etcd             etcd (the version in    } KUBEBUILDER_ASSETS; build logs and the generated
#                    Kubernetes' module graph) wrapper module stay next to them (logs/, wrapper/)
#   assets           ensure all three above, print the folder (use it as KUBEBUILDER_ASSETS)
#   kuberay-crds     KubeRay's CRDs (module zip from the proxy), copied to kuberay/<version>/crds/;
#                    prints the path of ray.io_rayjobs.yaml
#   helm             Helm 3 CLI (helm.sh/helm/v3/cmd/helm), for the chart's tests
#   servicemonitor-crd  prometheus-operator's ServiceMonitor CRD (module zip from the proxy), copied to
#                    prometheus-operator/<version>/; prints its path
#   chromium         headless Chromium (Debian's package, apt-get installed when missing); prints its path
#   pillow-images    Pillow's Tests/images folder (its crash, fuzz, oom, timeout, truncated and
#                    decompression-bomb regressions), from the sdist on PyPI; prints the folder
#
# GOPATH, GOMODCACHE and GOCACHE are left at their defaults (under $HOME) so module downloads and
# compiled packages are reused across builds and tools. A build goes into a temporary directory next
# to its final place and is renamed into place only once it succeeded, so a half-built binary is
# never cached; concurrent callers are serialised with flock(1) when it is available.
#
# Adding a tool: pin its version below, write a `_loupe_build_<tool> <out_dir>` function that leaves
# the binary in <out_dir>, and add a case to `loupe_tool`.
#
# Functions use subshell bodies `( ... )`, so sourcing this file does not change the caller's shell
# options; strict mode is switched on inside each of them.

# --- pinned versions -------------------------------------------------------------------------------
# MinIO publishes no semver tags on the module proxy (its tags are RELEASE.*), so `@latest` resolves to
# a pseudo-version; pin that exactly. This one (commit 7aac2a2c5b7c, 2026-02-12) builds with go 1.26
# and supports conditional writes (PutObject with If-None-Match: *).
LOUPE_MINIO_VERSION="${LOUPE_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"

# Kubernetes: kube-apiserver and kubectl from k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3 at
# the version Kubernetes itself requires (v3.6.4 for v1.34.4). All three build with go 1.26.
LOUPE_K8S_VERSION="${LOUPE_K8S_VERSION:-v1.34.4}"
# KubeRay CRDs. v1.7.0 is listed by the module proxy here but its zip answers 403 ("This module version
# is not available"), so this is the newest version whose zip downloads.
LOUPE_KUBERAY_VERSION="${LOUPE_KUBERAY_VERSION:-v1.6.1}"
# Helm 3: the chart's tests lint and render charts/loupe with it.
LOUPE_HELM_VERSION="${LOUPE_HELM_VERSION:-v3.21.4}"
# prometheus-operator: only its ServiceMonitor CRD, to validate the chart's ServiceMonitor.
LOUPE_PROMETHEUS_OPERATOR_VERSION="${LOUPE_PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
# Pillow: only the Tests/images folder of its source distribution, the hostile-input suite's corpus.
LOUPE_PILLOW_IMAGES_VERSION="${LOUPE_PILLOW_IMAGES_VERSION:-13.0.0}"

# --- helpers ---------------------------------------------------------------------------------------
_loupe_log() {
    printf 'tools.sh: %s\n' "$*" >&2
}

_loupe_die() {
    printf 'tools.sh: error: %s\n' "$*" >&2
    exit 1
}

_loupe_cache_root() {
    printf '%s\n' "${LOUPE_TOOLS_CACHE:-${HOME}/.cache/loupe-tools}"
}

# Print the go binary to use: $GO, else `go` on PATH, else the usual install location.
_loupe_go() (
    set -euo pipefail
    if [[ -n "${GO:-}" ]]; then
        printf '%s\n' "${GO}"
    elif command -v go >/dev/null 2>&1; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        printf '%s\n' /usr/local/go/bin/go
    else
        _loupe_die "no Go toolchain found (set GO=/path/to/go or put go on PATH)"
    fi
)

# _loupe_ensure <tool> <version> <binary-name> [<builder>]
# Build the tool with `<builder> <tmpdir>` (default `_loupe_build_<tool>`) unless already cached; print
# the cached path. The builder's output goes to stderr and, for builders that write one, to a log file.
_loupe_ensure() (
    set -euo pipefail
    local tool="$1" version="$2" binary="$3" builder="${4:-_loupe_build_$1}"
    local dir target
    dir="$(_loupe_cache_root)/${tool}/${version}"
    target="${dir}/${binary}"
    if [[ -x "${target}" ]]; then
        printf '%s\n' "${target}"
        return 0
    fi
    mkdir -p "${dir}"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"${dir}.lock"
        flock 9
        # Another process may have finished the build while we waited for the lock.
        if [[ -x "${target}" ]]; then
            printf '%s\n' "${target}"
            return 0
        fi
    fi
    local tmp
    tmp="$(mktemp -d "${dir}/.build.XXXXXX")"
    # On any exit: drop the temporary build dir, and the version dir too if nothing got cached in it.
    # shellcheck disable=SC2064  # expand the paths now, on purpose
    trap "rm -rf '${tmp}'; rmdir '${dir}' 2>/dev/null || true" EXIT
    _loupe_log "building ${binary} (${tool} ${version}; first time only; this takes several minutes) ..."
    local start=${SECONDS}
    if ! "${builder}" "${tmp}" >&2; then
        _loupe_die "building ${tool} ${version} failed (see the output above). The cache at ${dir} was left untouched."
    fi
    if [[ ! -x "${tmp}/${binary}" ]]; then
        _loupe_die "building ${tool} ${version} produced no ${binary} binary in ${tmp}"
    fi
    mv -f "${tmp}/${binary}" "${target}"
    _loupe_log "built ${binary} (${tool} ${version}) in $((SECONDS - start))s: ${target}"
    printf '%s\n' "${target}"
)

# --- tools -----------------------------------------------------------------------------------------
# MinIO: the S3 server. Built the way MinIO's own Makefile builds releases (static, -trimpath,
# kqueue tag), with the version stamped from the pseudo-version's commit time and hash.
_loupe_build_minio() (
    set -euo pipefail
    local out="$1" go version release ts commit
    go="$(_loupe_go)"
    local ldflags="-s -w"
    # Pseudo-version vX.Y.Z-...-YYYYMMDDhhmmss-abcdefabcdef: stamp its commit time and hash.
    if [[ "${LOUPE_MINIO_VERSION}" =~ ([0-9]{14})-([0-9a-f]{12})$ ]]; then
        ts="${BASH_REMATCH[1]}"
        commit="${BASH_REMATCH[2]}"
        version="${ts:0:4}-${ts:4:2}-${ts:6:2}T${ts:8:2}:${ts:10:2}:${ts:12:2}Z"
        release="RELEASE.${version//:/-}"
        ldflags+=" -X github.com/minio/minio/cmd.Version=${version}"
        ldflags+=" -X github.com/minio/minio/cmd.ReleaseTag=${release}"
        ldflags+=" -X github.com/minio/minio/cmd.CopyrightYear=${ts:0:4}"
        ldflags+=" -X github.com/minio/minio/cmd.CommitID=${commit}"
        ldflags+=" -X github.com/minio/minio/cmd.ShortCommitID=${commit}"
    fi
    "${go}" version
    GOBIN="${out}" CGO_ENABLED=0 \
        "${go}" install -trimpath -tags kqueue -ldflags "${ldflags}" "github.com/minio/minio@${LOUPE_MINIO_VERSION}"
)

# Kubernetes. k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces its ~31 staging modules
# (k8s.io/api, k8s.io/apimachinery, k8s.io/apiserver, k8s.io/client-go, ...) with local ./staging paths.
# A generated wrapper module requires k8s.io/kubernetes and replaces each of those modules with its
# published v0.<minor>.<patch> release instead, then builds cmd/kube-apiserver and cmd/kubectl and etcd's
# main package (go.etcd.io/etcd/server/v3, at the version Kubernetes' own module graph selects) from it.
_loupe_k8s_dir() {
    printf '%s\n' "$(_loupe_cache_root)/kubernetes/${LOUPE_K8S_VERSION}"
}

# Print the wrapper module's folder, generating it (go.mod + go.sum) on first use. The caller holds the
# version folder's lock (_loupe_ensure), so two builds never generate it at once.
_loupe_k8s_wrapper() (
    set -euo pipefail
    local go dir wrapper tmp upstream staging
    go="$(_loupe_go)"
    dir="$(_loupe_k8s_dir)"
    wrapper="${dir}/wrapper"
    if [[ -f "${wrapper}/go.mod" && -f "${wrapper}/go.sum" ]]; then
        printf '%s\n' "${wrapper}"
        return 0
    fi
    [[ "${LOUPE_K8S_VERSION}" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] ||
        _loupe_die "LOUPE_K8S_VERSION=${LOUPE_K8S_VERSION} is not a release version like v1.34.4"
    staging="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
    tmp="$(mktemp -d "${dir}/.wrapper.XXXXXX")"
    # shellcheck disable=SC2064  # expand the path now, on purpose
    trap "rm -rf '${tmp}'" EXIT
    cd "${tmp}"
    upstream="$("${go}" mod download -json "k8s.io/kubernetes@${LOUPE_K8S_VERSION}" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -f "${upstream}" ]] || _loupe_die "could not download k8s.io/kubernetes@${LOUPE_K8S_VERSION}'s go.mod"
    {
        printf '// Generated by .ci/tools.sh: builds Kubernetes %s from the Go module proxy.\n' \
            "${LOUPE_K8S_VERSION}"
        printf 'module loupe.local/k8s-tools\n\n'
        # Same language version and GODEBUG defaults as Kubernetes' own build.
        grep -E '^go [0-9]' "${upstream}"
        awk '/^godebug \(/ {block = 1} block || /^godebug / {print} block && /^\)/ {block = 0}' "${upstream}"
        printf '\nrequire k8s.io/kubernetes %s\n\n' "${LOUPE_K8S_VERSION}"
        printf 'replace (\n'
        awk -v v="${staging}" '$2 == "=>" && $3 ~ /^\.\/staging\// {printf "\t%s => %s %s\n", $1, $1, v}' \
            "${upstream}"
        printf ')\n\n'
        printf 'tool (\n\tgo.etcd.io/etcd/server/v3\n\tk8s.io/kubernetes/cmd/kube-apiserver\n'
        printf '\tk8s.io/kubernetes/cmd/kubectl\n)\n'
    } >go.mod
    local replaced
    replaced="$(grep -c ' => ' go.mod || true)"
    [[ "${replaced}" -ge 20 ]] || _loupe_die "found only ${replaced} staging modules in ${upstream}"
    _loupe_log "wrapper module for Kubernetes ${LOUPE_K8S_VERSION}: ${replaced} staging modules at ${staging}"
    "${go}" mod tidy >&2
    mkdir -p "${wrapper}"
    mv -f go.mod go.sum "${wrapper}/"
    printf '%s\n' "${wrapper}"
)

# _loupe_build_k8s <binary> <package> <out_dir>: build one binary from the wrapper module, with the version
# stamped the way Kubernetes' own build (hack/lib/version.sh) stamps it. Output is also logged to
# kubernetes/<version>/logs/<binary>.log.
_loupe_build_k8s() (
    set -euo pipefail
    local binary="$1" package="$2" out="$3" go dir wrapper commit log
    go="$(_loupe_go)"
    dir="$(_loupe_k8s_dir)"
    mkdir -p "${dir}/logs"
    log="${dir}/logs/${binary}.log"
    {
        printf -- '--- %s: building %s (%s) for Kubernetes %s\n' "$(date -u +%FT%TZ)" "${binary}" \
            "${package}" "${LOUPE_K8S_VERSION}"
        wrapper="$(_loupe_k8s_wrapper)"
        cd "${wrapper}"
        [[ "${LOUPE_K8S_VERSION}" =~ ^v1\.([0-9]+)\. ]]
        local minor="${BASH_REMATCH[1]}" ldflags="-s -w" pkg
        commit="$("${go}" mod download -json "k8s.io/kubernetes@${LOUPE_K8S_VERSION}" |
            sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]\{40\}\)",\{0,1\}$/\1/p' | head -n 1)"
        for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
            ldflags+=" -X ${pkg}.gitVersion=${LOUPE_K8S_VERSION} -X ${pkg}.gitMajor=1"
            ldflags+=" -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
            [[ -z "${commit}" ]] || ldflags+=" -X ${pkg}.gitCommit=${commit}"
        done
        local -a jobs=()
        [[ -z "${LOUPE_GO_BUILD_JOBS:-}" ]] || jobs=(-p "${LOUPE_GO_BUILD_JOBS}")
        "${go}" version
        local start=${SECONDS}
        CGO_ENABLED=0 "${go}" build "${jobs[@]}" -trimpath -ldflags "${ldflags}" -o "${out}/${binary}" "${package}"
        printf -- '--- built %s in %ss (%s bytes)\n' "${binary}" "$((SECONDS - start))" \
            "$(stat -c %s "${out}/${binary}")"
    } 2>&1 | tee -a "${log}"
)

_loupe_build_kube_apiserver() { _loupe_build_k8s kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$1"; }
_loupe_build_kubectl() { _loupe_build_k8s kubectl k8s.io/kubernetes/cmd/kubectl "$1"; }
_loupe_build_etcd() { _loupe_build_k8s etcd go.etcd.io/etcd/server/v3 "$1"; }

_loupe_k8s_binary() {
    _loupe_ensure kubernetes "${LOUPE_K8S_VERSION}" "$1" "_loupe_build_${1//-/_}"
}

# Ensure etcd, kube-apiserver and kubectl are built; print their folder (for KUBEBUILDER_ASSETS).
_loupe_k8s_assets() (
    set -euo pipefail
    local binary
    for binary in etcd kube-apiserver kubectl; do
        _loupe_k8s_binary "${binary}" >/dev/null
    done
    _loupe_k8s_dir
)

# Helm, stamped the way Helm's Makefile stamps releases: its version, and the default Kubernetes version
# of `helm template`/`helm lint` (1.<minor of its k8s.io/client-go>; unstamped it would be 1.20).
_loupe_build_helm() (
    set -euo pipefail
    local out="$1" go ldflags="-s -w" gomod client pkg
    go="$(_loupe_go)"
    ldflags+=" -X helm.sh/helm/v3/internal/version.version=${LOUPE_HELM_VERSION}"
    ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    gomod="$(cd "${out}" && "${go}" mod download -json "helm.sh/helm/v3@${LOUPE_HELM_VERSION}" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    client="$(awk '$1 == "k8s.io/client-go" {print $2}' "${gomod}")"
    [[ "${client}" =~ ^v0\.([0-9]+)\. ]] || _loupe_die "no k8s.io/client-go version in ${gomod}"
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        ldflags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${BASH_REMATCH[1]}"
    done
    "${go}" version
    GOBIN="${out}" CGO_ENABLED=0 \
        "${go}" install -trimpath -ldflags "${ldflags}" "helm.sh/helm/v3/cmd/helm@${LOUPE_HELM_VERSION}"
)

# KubeRay's CRDs from the ray-operator module zip: copied to kuberay/<version>/crds/; prints the path of
# ray.io_rayjobs.yaml.
_loupe_kuberay_crds() (
    set -euo pipefail
    local go dir crds tmp module
    go="$(_loupe_go)"
    dir="$(_loupe_cache_root)/kuberay/${LOUPE_KUBERAY_VERSION}"
    crds="${dir}/crds"
    if [[ ! -f "${crds}/ray.io_rayjobs.yaml" ]]; then
        mkdir -p "${dir}"
        tmp="$(mktemp -d "${dir}/.download.XXXXXX")"
        # shellcheck disable=SC2064  # expand the path now, on purpose
        trap "rm -rf '${tmp}'" EXIT
        _loupe_log "downloading github.com/ray-project/kuberay/ray-operator@${LOUPE_KUBERAY_VERSION} ..."
        module="$(cd "${tmp}" && "${go}" mod download -json \
            "github.com/ray-project/kuberay/ray-operator@${LOUPE_KUBERAY_VERSION}" |
            sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
        if [[ -z "${module}" || ! -f "${module}/config/crd/bases/ray.io_rayjobs.yaml" ]]; then
            _loupe_die "could not download KubeRay ${LOUPE_KUBERAY_VERSION}'s CRDs from the module proxy"
        fi
        mkdir -p "${tmp}/crds"
        cp "${module}"/config/crd/bases/*.yaml "${tmp}/crds/"
        chmod -R u+w "${tmp}/crds"
        rm -rf "${crds}"
        mv "${tmp}/crds" "${crds}"
    fi
    printf '%s\n' "${crds}/ray.io_rayjobs.yaml"
)

# prometheus-operator's ServiceMonitor CRD from its module zip; prints the copied file's path.
_loupe_servicemonitor_crd() (
    set -euo pipefail
    local go dir file tmp module name="monitoring.coreos.com_servicemonitors.yaml"
    go="$(_loupe_go)"
    dir="$(_loupe_cache_root)/prometheus-operator/${LOUPE_PROMETHEUS_OPERATOR_VERSION}"
    file="${dir}/${name}"
    if [[ ! -f "${file}" ]]; then
        mkdir -p "${dir}"
        tmp="$(mktemp -d "${dir}/.download.XXXXXX")"
        # shellcheck disable=SC2064  # expand the path now, on purpose
        trap "rm -rf '${tmp}'" EXIT
        _loupe_log "downloading github.com/prometheus-operator/prometheus-operator@${LOUPE_PROMETHEUS_OPERATOR_VERSION} ..."
        module="$(cd "${tmp}" && "${go}" mod download -json \
            "github.com/prometheus-operator/prometheus-operator@${LOUPE_PROMETHEUS_OPERATOR_VERSION}" |
            sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
        if [[ -z "${module}" || ! -f "${module}/example/prometheus-operator-crd/${name}" ]]; then
            _loupe_die "could not download prometheus-operator ${LOUPE_PROMETHEUS_OPERATOR_VERSION}'s CRDs"
        fi
        cp "${module}/example/prometheus-operator-crd/${name}" "${tmp}/${name}"
        chmod u+w "${tmp}/${name}"
        mv -f "${tmp}/${name}" "${file}"
    fi
    printf '%s\n' "${file}"
)

# Headless Chromium from Debian's packages (the report tests render HTML in it); prints its path.
_loupe_chromium() (
    set -euo pipefail
    local found
    found="$(command -v chromium || command -v chromium-browser || true)"
    if [[ -z "${found}" ]]; then
        local sudo=""
        [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
        _loupe_log "installing Debian's chromium (apt-get) ..."
        ${sudo} apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive ${sudo} apt-get install -y -qq --no-install-recommends chromium >&2
        found="$(command -v chromium)"
    fi
    printf '%s\n' "${found}"
)

# Pillow's Tests/images folder from its sdist on PyPI (`pip download --no-binary :all:`, about 47 MB):
# extracted to pillow-images/<version>/images/; prints that folder. The sdist itself is not kept.
_loupe_pillow_images() (
    set -euo pipefail
    local dir images tmp python sdist
    dir="$(_loupe_cache_root)/pillow-images/${LOUPE_PILLOW_IMAGES_VERSION}"
    images="${dir}/images"
    if [[ ! -d "${images}" ]]; then
        mkdir -p "${dir}"
        if command -v flock >/dev/null 2>&1; then
            exec 9>"${dir}.lock"
            flock 9
        fi
    fi
    if [[ ! -d "${images}" ]]; then
        tmp="$(mktemp -d "${dir}/.download.XXXXXX")"
        # shellcheck disable=SC2064  # expand the path now, on purpose
        trap "rm -rf '${tmp}'" EXIT
        # Any pip will do (the project's uv venv has none): $PYTHON, else python3 on PATH.
        python="${PYTHON:-python3}"
        _loupe_log "downloading Pillow ${LOUPE_PILLOW_IMAGES_VERSION}'s sdist (about 47 MB) for its Tests/images ..."
        "${python}" -m pip download --quiet --no-deps --no-binary :all: --dest "${tmp}" \
            "pillow==${LOUPE_PILLOW_IMAGES_VERSION}" >&2
        sdist="$(find "${tmp}" -maxdepth 1 -name '*.tar.gz' | head -n 1)"
        [[ -n "${sdist}" ]] || _loupe_die "pip download left no sdist of pillow ${LOUPE_PILLOW_IMAGES_VERSION}"
        mkdir -p "${tmp}/src"
        tar -xzf "${sdist}" -C "${tmp}/src" --strip-components=1 --wildcards '*/Tests/images/*'
        [[ -d "${tmp}/src/Tests/images" ]] || _loupe_die "no Tests/images in ${sdist}"
        chmod -R u+rwX,go+rX "${tmp}/src/Tests/images"
        mv "${tmp}/src/Tests/images" "${images}"
        _loupe_log "Pillow's Tests/images: $(find "${images}" -type f | wc -l) files in ${images}"
    fi
    printf '%s\n' "${images}"
)

# loupe_tool <tool>...: ensure each tool is built and print its path.
loupe_tool() (
    set -euo pipefail
    local tool tools="minio etcd kube-apiserver kubectl assets kuberay-crds helm servicemonitor-crd chromium pillow-images"
    if [[ $# -eq 0 ]]; then
        _loupe_die "usage: tools.sh <tool>...   (tools: ${tools})"
    fi
    for tool in "$@"; do
        case "${tool}" in
            minio) _loupe_ensure minio "${LOUPE_MINIO_VERSION}" minio ;;
            etcd | kube-apiserver | kubectl) _loupe_k8s_binary "${tool}" ;;
            assets) _loupe_k8s_assets ;;
            kuberay-crds) _loupe_kuberay_crds ;;
            helm) _loupe_ensure helm "${LOUPE_HELM_VERSION}" helm ;;
            servicemonitor-crd) _loupe_servicemonitor_crd ;;
            chromium) _loupe_chromium ;;
            pillow-images) _loupe_pillow_images ;;
            -h | --help | help)
                printf 'usage: tools.sh <tool>...\n'
                printf '  minio           MinIO S3 server %s\n' "${LOUPE_MINIO_VERSION}"
                printf '  kube-apiserver  Kubernetes %s API server\n' "${LOUPE_K8S_VERSION}"
                printf '  kubectl         Kubernetes %s CLI\n' "${LOUPE_K8S_VERSION}"
                printf '  etcd            etcd, as required by Kubernetes %s\n' "${LOUPE_K8S_VERSION}"
                printf '  assets          all three; prints their folder, for KUBEBUILDER_ASSETS\n'
                printf '  kuberay-crds    KubeRay %s CRDs; prints the path of ray.io_rayjobs.yaml\n' \
                    "${LOUPE_KUBERAY_VERSION}"
                printf '  helm            Helm %s CLI\n' "${LOUPE_HELM_VERSION}"
                printf '  servicemonitor-crd  prometheus-operator %s ServiceMonitor CRD; prints its path\n' \
                    "${LOUPE_PROMETHEUS_OPERATOR_VERSION}"
                printf '  pillow-images   Pillow %s Tests/images folder; prints its path\n' \
                    "${LOUPE_PILLOW_IMAGES_VERSION}"
                ;;
            *) _loupe_die "unknown tool '${tool}' (tools: ${tools})" ;;
        esac
    done
)

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
    set -euo pipefail
    loupe_tool "$@"
fi
