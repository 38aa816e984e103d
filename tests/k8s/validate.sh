#!/usr/bin/env bash
# Static verification of the Kubernetes manifests (no cluster needed):
#   1. generated files are in step with their sources (k8s/tools/sync.sh --check);
#   2. every kustomize entry point renders with `kubectl kustomize`: base, dev,
#      production, production with the KEDA component, the example in another
#      namespace (k8s/kustomize/other-namespace), and the plain manifests
#      retargeted at another registry with the one-liner of docs/kubernetes.md;
#   3. every manifest, rendering and the generated Secret validate in
#      strict mode against the Kubernetes schemas of each version in K8S_VERSIONS
#      (PyPI kubernetes-validate);
#   4. checkov's Kubernetes policies pass on the manifests and rendered overlays
#      (skips are inline `checkov.io/skipN` annotations, each with its reason);
#   5. promtool checks the alert rules the manifests mount, when installed.
# Python tools go to a venv in ${CATGA_K8S_VENV:-~/.cache/catga-k8s-venv}.
# Exits non-zero on the first failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
venv="${CATGA_K8S_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/catga-k8s-venv}"
K8S_VERSIONS="${K8S_VERSIONS:-1.25.0 1.28.0 1.32.0}"
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
out="$root/target/k8s-rendered"

step() { printf '\n== %s\n' "$*"; }

step "tools"
command -v kubectl >/dev/null || { echo "kubectl is required (client only)" >&2; exit 1; }
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" - "$KUBERNETES_VALIDATE_VERSION" "$CHECKOV_VERSION" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
sys.exit(0 if (version("kubernetes-validate"), version("checkov")) == tuple(sys.argv[1:3]) else 1)
PY
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "checkov==$CHECKOV_VERSION"
fi
echo "kubectl $(kubectl version --client -o json | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')," \
  "kubernetes-validate $KUBERNETES_VALIDATE_VERSION, checkov $CHECKOV_VERSION"

step "generated files are up to date"
k8s/tools/sync.sh --check

step "kubectl apply -f k8s/ reads manifests only"
for f in k8s/*; do
  [[ -d "$f" ]] && continue
  [[ "$f" =~ ^k8s/[0-9]{2}-[a-z0-9-]+\.yml$ ]] || { echo "not a manifest name: $f" >&2; exit 1; }
done
ls k8s/*.yml

step "render kustomize entry points"
rm -rf "$out" && mkdir -p "$out"
render() { # name dir
  kubectl kustomize "$2" > "$out/$1.yml"
  echo "$2 -> target/k8s-rendered/$1.yml ($(grep -c '^kind:' "$out/$1.yml") objects)"
}
for overlay in base dev production other-namespace; do
  render "$overlay" "k8s/kustomize/$overlay"
done
render production-keda tests/k8s/overlays/production-keda
grep -q '^kind: ScaledObject' "$out/production-keda.yml"
! grep -q '^kind: ScaledObject' "$out/production.yml"
ALERT_WEBHOOK_URL=https://alerts.example.invalid/hook NOTIFICATION_WEBHOOK_URL=https://orders.example.invalid/hook \
  k8s/tools/create-secrets.sh --print > "$out/catga-secrets.example.yml"

step "plain manifests retargeted at another registry (docs/kubernetes.md one-liner)"
# The line of docs/kubernetes.md, with `kubectl apply -f -` replaced by a file.
retarget="$(grep -m1 -E "^ *awk 'FNR==1" docs/kubernetes.md | sed -E 's/^ +//')"
[[ "$retarget" == *"| kubectl apply -f -" ]] || { echo "docs/kubernetes.md: no retarget one-liner" >&2; exit 1; }
bash -c "${retarget%| kubectl apply -f -}" > "$out/retargeted.yml"
grep -E '^ +image: ' "$out/retargeted.yml" | sort -u
if grep -E '^ +image: catga/' "$out/retargeted.yml"; then echo "an image kept its catga/ name" >&2; exit 1; fi
# Distinct: order-service's image also runs its init container (the operator step).
[[ "$(grep -E '^ +image: registry\.example/team/(order-api|order-service|notification-service):1\.2\.3$' "$out/retargeted.yml" | sort -u | wc -l)" == 3 ]] \
  || { echo "the three service images are not registry.example/team/...:1.2.3" >&2; exit 1; }
[[ "$(grep -c '^kind:' "$out/retargeted.yml")" == "$(cat k8s/*.yml | grep -c '^kind:')" ]]

# k8s/tools/*.yml: the on-demand workloads (toolbox pod, load generator Job).
manifests=(k8s/*.yml k8s/tools/*.yml "$out/dev.yml" "$out/production.yml" "$out/production-keda.yml"
           "$out/other-namespace.yml" "$out/retargeted.yml")

step "kubernetes-validate --strict"
for v in $K8S_VERSIONS; do
  log="$out/validate-$v.log"
  if ! "$venv/bin/kubernetes-validate" --strict -k "$v" "${manifests[@]}" "$out/base.yml" "$out/catga-secrets.example.yml" > "$log" 2>&1; then
    grep -v '^INFO' "$log" >&2
    echo "kubernetes-validate failed for Kubernetes $v" >&2
    exit 1
  fi
  # Custom resources have no bundled schema; only these may be unchecked here
  # (tests/manifests checks the ScaledObject against the code instead).
  if grep '^WARN' "$log" | grep -v 'kind ScaledObject with api version keda.sh/v1alpha1' >&2; then
    echo "unexpected warnings for Kubernetes $v" >&2
    exit 1
  fi
  echo "Kubernetes $v: $(grep -c '^INFO.*passed' "$log") resources passed, $(grep -c '^WARN' "$log") custom resources without schema"
done

step "checkov (kubernetes framework)"
args=()
for f in "${manifests[@]}"; do args+=(-f "$f"); done
"$venv/bin/checkov" --framework kubernetes --compact --quiet --skip-download "${args[@]}" 2>"$out/checkov.stderr" | tee "$out/checkov.txt"
grep -q 'Failed checks: 0,' "$out/checkov.txt"

step "promtool"
# Only the rules: Debian's promtool is built without Kubernetes service discovery,
# so it cannot parse the kubernetes_sd_configs of prometheus-config
# (tests/manifests checks that configuration instead).
if command -v promtool >/dev/null; then
  promtool check rules docker/observability/prometheus/alerts.yml
else
  echo "promtool not installed (apt-get install prometheus): skipped"
fi

printf '\nk8s validation: all checks passed\n'
