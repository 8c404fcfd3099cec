#!/usr/bin/env bash
# Build the Cerise image from the repository's Dockerfile with podman, on a local Debian
# bookworm base (mmdebstrap, then `podman import`: no image registry is needed), and the
# test node's sandbox ("pause") image from tools/pause. Both are cached by content outside
# the repository: the image's tag is a hash of everything that goes into it, and a tag
# that exists already is reused as is.
#
# Prints the size and build time on stderr, and on stdout the paths of the two image
# archives (docker-archive format, for `ctr images import`): the Cerise image's on the
# last line, the pause image's on the line before. Only the newest three Cerise images
# are kept.
#
# Needs root, podman, runc, mmdebstrap and Go (tools/install-system.sh installs the
# Debian packages). Elsewhere, build the Dockerfile as it is: `docker build .`.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
CACHE=${CERISE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cerise-images}
# The base: Debian bookworm with Python 3.11 and what python:3.11-slim-bookworm offers
# (python, pip and venv), slimmed as Debian's own images are: no documentation, manuals or
# translations, and no apt caches left in layers.
BASE_OPTIONS=(
    --variant=minbase --include=python3,python3-venv,python3-pip,python-is-python3
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
    --aptopt='Dir::Cache::pkgcache ""' --aptopt='Dir::Cache::srcpkgcache ""'
)
export CONTAINERS_CONF=$HERE/containers.conf

log() { echo "build-image: $*" >&2; }

# sha256 over the names and contents of files (paths relative to the repository).
content_hash() {
    (cd "$REPO" && find "$@" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

# The base image, made from Debian's packages; keyed by the options that make it.
base_image() {
    local tag key
    key=$(echo "${BASE_OPTIONS[*]}" | sha256sum | cut -c1-16)
    tag=localhost/cerise-base:bookworm-$key
    if ! podman image exists "$tag"; then
        log "making the base $tag with mmdebstrap"
        local tmp
        tmp=$(mktemp -d)
        mmdebstrap --quiet "${BASE_OPTIONS[@]}" bookworm "$tmp/rootfs.tar" >&2
        podman import --quiet "$tmp/rootfs.tar" "$tag" >/dev/null
        rm -rf "$tmp"
    fi
    echo "$tag"
}

# Save `image` as a docker-archive at `archive`, unless it is there already.
save() {
    local image=$1 archive=$2
    if [ ! -s "$archive" ]; then
        podman save --quiet --format docker-archive -o "$archive.tmp" "$image"
        mv "$archive.tmp" "$archive"
    fi
}

pause_image() {
    local key tag archive
    key=$(content_hash tools/pause)
    tag=localhost/cerise-pause:$key
    archive=$CACHE/cerise-pause-$key.tar
    if ! podman image exists "$tag"; then
        log "building $tag"
        local tmp
        tmp=$(mktemp -d)
        CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS="-trimpath -buildvcs=false" \
            go -C "$HERE/pause" build -ldflags "-s -w" -o "$tmp/pause" .
        cp "$HERE/pause/Containerfile" "$tmp/"
        podman build --quiet --network none -t "$tag" "$tmp" >/dev/null
        rm -rf "$tmp"
    fi
    save "$tag" "$archive"
    echo "$archive"
}

cerise_image() {
    local base key tag archive began
    base=$(base_image)
    key=$(echo "$base $(content_hash Dockerfile .dockerignore pyproject.toml README.md cerise \
        specialisations/example tools/build-image.sh tools/containers.conf)" \
        | sha256sum | cut -c1-16)
    tag=localhost/cerise-k8s:$key
    archive=$CACHE/cerise-k8s-$key.tar
    if ! podman image exists "$tag"; then
        log "building $tag on $base"
        began=$(date +%s)
        # The host's CA bundle: pip inside the build reaches PyPI through an authority
        # that only the host's bundle names. podman's layer cache keys a COPY by what it
        # copies, so a change of cerise/ rebuilds only the package's own layers. The build
        # stage is tagged too, or the prune below would drop its cached layers.
        local build=(podman build --network host --build-arg "BASE=$base"
                     -v /etc/ssl/certs:/etc/ssl/certs:ro)
        "${build[@]}" -t "$tag" "$REPO" >&2
        "${build[@]}" --target build -t localhost/cerise-k8s-build:latest "$REPO" >&2
        log "built $tag in $(($(date +%s) - began)) s"
    fi
    log "$tag: $(podman image inspect --format '{{.Size}}' "$tag" \
        | awk '{printf "%.0f MB", $1 / 1e6}')"
    save "$tag" "$archive"
    echo "$archive"
}

# Keep the newest few Cerise images (each change of the tree makes one), so that the cache
# does not grow without bound while a test session still importing an older one keeps it.
prune() {
    local keep=3 old
    for old in $(ls -t "$CACHE"/cerise-k8s-*.tar 2>/dev/null | tail -n +$((keep + 1))); do
        old=${old##*/cerise-k8s-}
        old=${old%.tar}
        rm -f "$CACHE/cerise-k8s-$old.tar"
        podman rmi --force "localhost/cerise-k8s:$old" >/dev/null 2>&1 || true
    done
    podman image prune --force >/dev/null
}

mkdir -p "$CACHE"
pause_image
cerise_image
prune
