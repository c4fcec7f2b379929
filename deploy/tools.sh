#!/usr/bin/env bash
# The tools of `make deploy-check`, built and cached once (idempotent; a second run does nothing):
#   helm, kubeconform   `go install` of pinned releases from the Go module proxy;
#   composecheck        deploy/tools/composecheck, built against compose-go (pinned by its go.sum);
#   crdcheck            deploy/tools/crdcheck: `npm ci` of @kubernetes-models/prometheus-operator
#                       (pinned by its package-lock.json), the ServiceMonitor CRD's schema compiled;
#   Kubernetes schemas  the JSON schemas that the kubernetes-validate package (PyPI, a dev dependency)
#                       ships, laid out the way kubeconform reads them (no download from GitHub).
# Cache: ${MR_TOOLS_CACHE:-~/.cache/mention-router}. `deploy/tools.sh env` prints the paths to eval.
set -euo pipefail

HELM_VERSION=v3.22.0
# What helm's own release build stamps in with -ldflags: its version, and the Kubernetes version of its
# client-go (v0.37.0 in helm v3.22.0's go.mod) as the default for capabilities and deprecation checks.
HELM_KUBE_MINOR=37
HELM_LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in pkg/lint/rules pkg/chartutil; do
    HELM_LDFLAGS="$HELM_LDFLAGS -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_KUBE_MINOR"
done
KUBECONFORM_VERSION=v0.8.0
# Kubernetes versions the chart is validated against: the oldest it supports (Chart.yaml kubeVersion)
# and the newest the schema package knows.
KUBE_VERSIONS="1.29.0 1.37.0"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${MR_TOOLS_CACHE:-$HOME/.cache/mention-router}"
BIN="$CACHE/bin"
PYTHON="$ROOT/.venv/bin/python"

composecheck_id() {
    cat "$ROOT/deploy/tools/composecheck/go.mod" "$ROOT/deploy/tools/composecheck/go.sum" \
        "$ROOT/deploy/tools/composecheck/main.go" | sha256sum | cut -c1-12
}

crdcheck_dir() {
    echo "$CACHE/crdcheck-$(cat "$ROOT/deploy/tools/crdcheck/package-lock.json" "$ROOT/deploy/tools/crdcheck/check.mjs" | sha256sum | cut -c1-12)"
}

asyncapicheck_dir() {
    echo "$CACHE/asyncapicheck-$(cat "$ROOT/deploy/tools/asyncapicheck/package-lock.json" "$ROOT/deploy/tools/asyncapicheck/check.mjs" | sha256sum | cut -c1-12)"
}

schemas_dir() {
    local version
    version="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))')"
    echo "$CACHE/k8s-schemas/kubernetes-validate-$version"
}

paths() {
    HELM="$BIN/helm-$HELM_VERSION-k1.$HELM_KUBE_MINOR"
    KUBECONFORM="$BIN/kubeconform-$KUBECONFORM_VERSION"
    COMPOSECHECK="$BIN/composecheck-$(composecheck_id)"
    K8S_SCHEMAS="$(schemas_dir)"
    CRDCHECK="$(crdcheck_dir)/check.mjs"
    ASYNCAPICHECK="$(asyncapicheck_dir)/check.mjs"
}

go_install() {  # go_install PACKAGE@VERSION TARGET [LDFLAGS]
    local tmp
    tmp="$(mktemp -d)"
    echo "building $1 (go install, once) ..." >&2
    GOBIN="$tmp" GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -trimpath" go install -ldflags "${3:-}" "$1"
    mv "$tmp/$(basename "${1%@*}")" "$2"
    rm -rf "$tmp"
}

install() {
    local tool
    for tool in go node npm; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "deploy/tools.sh: '$tool' is not on PATH; the deploy checks need Go and Node.js" >&2
            exit 1
        fi
    done
    if [ ! -x "$PYTHON" ]; then
        echo "deploy/tools.sh: $PYTHON is missing; run 'make install' first" >&2
        exit 1
    fi
    mkdir -p "$BIN"
    paths
    [ -x "$HELM" ] || go_install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$HELM" "$HELM_LDFLAGS"
    [ -x "$KUBECONFORM" ] || go_install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" "$KUBECONFORM"
    if [ ! -x "$COMPOSECHECK" ]; then
        echo "building deploy/tools/composecheck (once) ..." >&2
        (cd "$ROOT/deploy/tools/composecheck" &&
            GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -trimpath -mod=readonly" go build -o "$COMPOSECHECK.tmp" . &&
            mv "$COMPOSECHECK.tmp" "$COMPOSECHECK")
    fi
    if [ ! -f "$CRDCHECK" ]; then
        echo "installing deploy/tools/crdcheck (npm ci, once) ..." >&2
        local dir tmp
        dir="$(dirname "$CRDCHECK")"
        tmp="$(mktemp -d "$CACHE/crdcheck.XXXXXX")"
        cp "$ROOT/deploy/tools/crdcheck/package.json" "$ROOT/deploy/tools/crdcheck/package-lock.json" "$tmp/"
        # The packages declare node >= 22 and run on the node 20 of this machine: the warning is muted.
        (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
        cp "$ROOT/deploy/tools/crdcheck/check.mjs" "$tmp/"
        rm -rf "$dir" && mv "$tmp" "$dir"
    fi
    if [ ! -f "$ASYNCAPICHECK" ]; then
        echo "installing deploy/tools/asyncapicheck (npm ci, once) ..." >&2
        local dir tmp
        dir="$(dirname "$ASYNCAPICHECK")"
        tmp="$(mktemp -d "$CACHE/asyncapicheck.XXXXXX")"
        cp "$ROOT/deploy/tools/asyncapicheck/package.json" "$ROOT/deploy/tools/asyncapicheck/package-lock.json" "$tmp/"
        (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
        cp "$ROOT/deploy/tools/asyncapicheck/check.mjs" "$tmp/"
        rm -rf "$dir" && mv "$tmp" "$dir"
    fi
    if [ ! -f "$K8S_SCHEMAS/.complete" ]; then
        # shellcheck disable=SC2086
        "$PYTHON" "$ROOT/deploy/checks.py" schemas "$K8S_SCHEMAS" $KUBE_VERSIONS
        touch "$K8S_SCHEMAS/.complete"
    fi
}

case "${1:-install}" in
    install)
        mkdir -p "$CACHE"
        # Several checkouts or engineers may run this at once: one builds, the others wait.
        exec 9>"$CACHE/tools.lock"
        flock 9
        install
        ;;
    env)
        paths
        echo "HELM='$HELM'"
        echo "KUBECONFORM='$KUBECONFORM'"
        echo "COMPOSECHECK='$COMPOSECHECK'"
        echo "K8S_SCHEMAS='$K8S_SCHEMAS'"
        echo "CRDCHECK='$CRDCHECK'"
        echo "ASYNCAPICHECK='$ASYNCAPICHECK'"
        echo "KUBE_VERSIONS='$KUBE_VERSIONS'"
        ;;
    *)
        echo "usage: deploy/tools.sh [install|env]" >&2
        exit 2
        ;;
esac
