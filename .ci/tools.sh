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

# _loupe_ensure <tool> <version> <binary-name>
# Build the tool with `_loupe_build_<tool> <tmpdir>` unless already cached; print the cached path.
_loupe_ensure() (
    set -euo pipefail
    local tool="$1" version="$2" binary="$3"
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
    _loupe_log "building ${tool} ${version} (first time only; this takes several minutes) ..."
    local start=${SECONDS}
    if ! "_loupe_build_${tool}" "${tmp}" >&2; then
        _loupe_die "building ${tool} ${version} failed (see the output above). The cache at ${dir} was left untouched."
    fi
    if [[ ! -x "${tmp}/${binary}" ]]; then
        _loupe_die "building ${tool} ${version} produced no ${binary} binary in ${tmp}"
    fi
    mv -f "${tmp}/${binary}" "${target}"
    _loupe_log "built ${tool} ${version} in $((SECONDS - start))s: ${target}"
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

# loupe_tool <tool>...: ensure each tool is built and print its path.
loupe_tool() (
    set -euo pipefail
    if [[ $# -eq 0 ]]; then
        _loupe_die "usage: tools.sh <tool>...   (tools: minio)"
    fi
    local tool
    for tool in "$@"; do
        case "${tool}" in
            minio) _loupe_ensure minio "${LOUPE_MINIO_VERSION}" minio ;;
            -h | --help | help)
                printf 'usage: tools.sh <tool>...\n  minio   MinIO S3 server %s\n' "${LOUPE_MINIO_VERSION}"
                ;;
            *) _loupe_die "unknown tool '${tool}' (tools: minio)" ;;
        esac
    done
)

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
    set -euo pipefail
    loupe_tool "$@"
fi
