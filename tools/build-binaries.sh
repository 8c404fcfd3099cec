#!/usr/bin/env bash
# Build the pinned Kubernetes binaries (control plane, and the node's kubelet, kube-proxy and
# kube-scheduler for the tests that run pods), etcd and helm from Go modules
# into a cache directory outside the repository, keyed by version. Idempotent: a
# cache whose binaries report the pinned versions is reused as is.
# Prints the cache directory on its last line of stdout.
set -euo pipefail

K8S=v1.35.4
ETCD=v3.6.14
HELM=v3.20.2
MINOR=${K8S#v1.}; MINOR=${MINOR%%.*}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${CERISE_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cerise-k8s/$K8S-etcd${ETCD#v}-helm${HELM#v}}
mkdir -p "$BIN"

export CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS="-trimpath -buildvcs=false"

# True if the cached binary reports the wanted version. The output is captured first:
# `| grep -q` could end the pipe early and fail it with SIGPIPE under pipefail.
have() {
    local out
    [ -x "$BIN/$1" ] && out=$("$BIN/$@" 2>/dev/null) && grep -q -- "$VERSION_WANTED" <<<"$out"
}

log() { echo "build-binaries: $*" >&2; }

build_k8s() {
    local ld="-s -w" date p c
    date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld="$ld -X $p.gitVersion=$K8S -X $p.gitMajor=1 -X $p.gitMinor=$MINOR"
        ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=$date"
    done
    for c in kube-apiserver kube-controller-manager kubectl kube-scheduler kube-proxy kubelet; do
        VERSION_WANTED="$K8S"
        if [ "$c" = kubectl ]; then have "$c" version --client && continue
        else have "$c" --version && continue; fi
        log "building $c $K8S (cold build takes a while)"
        go -C "$HERE/k8s" build -tags selinux,notest,grpcnotrace -ldflags "$ld" -o "$BIN/$c.tmp" \
            "k8s.io/kubernetes/cmd/$c"
        mv "$BIN/$c.tmp" "$BIN/$c"
    done
}

build_etcd() {
    VERSION_WANTED="${ETCD#v}"
    have etcd --version && return
    log "building etcd $ETCD"
    go -C "$HERE/etcd" build -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$BIN/etcd.tmp" "$BIN/etcd"
}

build_helm() {
    VERSION_WANTED="$HELM"
    have helm version --short && return
    log "building helm $HELM"
    local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM"
    local p
    for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
        ld="$ld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$MINOR"
    done
    go -C "$HERE/helm" build -ldflags "$ld" -o "$BIN/helm.tmp" helm.sh/helm/v3/cmd/helm
    mv "$BIN/helm.tmp" "$BIN/helm"
}

command -v go >/dev/null || { log "Go >= 1.25 is required to build the control plane"; exit 1; }
build_etcd
build_k8s
build_helm
echo "$BIN"
