#!/usr/bin/env bash
# `make deploy-check`: every check of the deployment files that can run without a Docker engine or a
# Kubernetes cluster. What it cannot do: build the image or start the compose project (no Docker
# engine here), install the chart (no cluster). See the README's "Deploy" section.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
CHART=deploy/helm/mention-router
started=$SECONDS

deploy/tools.sh install
eval "$(deploy/tools.sh env)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

step() { printf '  %-66s' "$1"; }
ok() { echo "ok"; }
# Helm says, on stderr, that it follows the chart's links to config/ (on purpose): keep the rest.
helm_() { "$HELM" "$@" 2> >(grep -v 'found symbolic link in path' >&2); }

echo "deploy-check:"
step "Dockerfile: hadolint"
"$ROOT/.venv/bin/hadolint" deploy/Dockerfile && ok

step "Dockerfile, .dockerignore, chart links, dashboard"
"$PY" deploy/checks.py static && ok

step "compose.yaml: Compose Specification schema + model (defaults)"
"$COMPOSECHECK" -json "$out/compose.json" deploy/compose/compose.yaml >/dev/null && ok
step "compose.yaml: the same with .env.example's values"
mapfile -t env_args < <(grep -E '^[A-Z_]+=' deploy/compose/.env.example | sed 's/^/-env\n/')
"$COMPOSECHECK" "${env_args[@]}" -json "$out/compose-env.json" deploy/compose/compose.yaml >/dev/null && ok
step "compose.yaml + compose.secure.yaml (secured broker)"
"$COMPOSECHECK" "${env_args[@]}" -json "$out/compose-secure.json" deploy/compose/compose.yaml \
    deploy/compose/compose.secure.yaml >/dev/null && ok
step "compose: environment vs Settings, depends_on, Kafka users"
for project in compose compose-env compose-secure; do
    "$PY" deploy/checks.py compose "$out/$project.json"
done && ok

for values in default production; do
    args=()
    [ "$values" = production ] && args=(-f deploy/helm/values-production.yaml)
    for kube in $KUBE_VERSIONS; do
        step "helm lint --strict, k8s $kube ($values values)"
        helm_ lint --strict --kube-version "$kube" "$CHART" "${args[@]}" >"$out/lint.txt" ||
            { cat "$out/lint.txt"; exit 1; }
        ok
        step "helm template + kubeconform -strict, k8s $kube ($values)"
        helm_ template mention-router "$CHART" "${args[@]}" --namespace mention-router \
            --kube-version "$kube" --api-versions monitoring.coreos.com/v1 >"$out/$values-$kube.yaml"
        # ServiceMonitor is a CRD: kubeconform has no schema for it; crdcheck (below) validates it.
        "$KUBECONFORM" -strict -summary -skip ServiceMonitor -kubernetes-version "$kube" \
            -schema-location "$K8S_SCHEMAS/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
            "$out/$values-$kube.yaml" >"$out/kubeconform.txt" || { cat "$out/kubeconform.txt"; exit 1; }
        sed -n 's/^Summary: //p' "$out/kubeconform.txt"
    done
    # `helm template` leaves NOTES.txt out and `helm install --dry-run` needs a cluster: render it with
    # `tpl` from a copy of the chart, with the same values.
    step "NOTES.txt renders ($values)"
    rm -rf "$out/notes-chart" && cp -rL "$CHART" "$out/notes-chart"
    mkdir -p "$out/notes-chart/notes" && cp "$CHART/templates/NOTES.txt" "$out/notes-chart/notes/"
    printf '%s\n' 'notes: |' '  {{- tpl (.Files.Get "notes/NOTES.txt") . | nindent 2 }}' \
        >"$out/notes-chart/templates/zz-notes.yaml"
    "$HELM" template mention-router "$out/notes-chart" "${args[@]}" --namespace mention-router \
        --kube-version 1.37.0 --show-only templates/zz-notes.yaml >"$out/notes.txt"
    if [ "$(wc -l <"$out/notes.txt")" -lt 10 ] || grep -q '<no value>' "$out/notes.txt"; then
        cat "$out/notes.txt"
        exit 1
    fi
    ok
    step "rendered manifests: selectors, probes, ports, env vs Settings"
    "$PY" deploy/checks.py manifests "$out/$values-1.37.0.yaml" && ok
    if grep -q '^kind: ServiceMonitor' "$out/$values-1.37.0.yaml"; then
        step "ServiceMonitor: Prometheus Operator CRD schema ($values)"
        "$PY" deploy/checks.py extract ServiceMonitor "$out/$values-1.37.0.yaml" "$out/servicemonitors.json"
        node "$CRDCHECK" "$out/servicemonitors.json"
    fi
done
step "docs/asyncapi.json: AsyncAPI parser"
node "$ASYNCAPICHECK" docs/asyncapi.json && ok

echo "deploy-check passed in $((SECONDS - started))s (image build and compose up not run: no Docker engine)"
