#!/usr/bin/env bash
# Static checks of docker/observability/: the Prometheus rule file and configuration
# (promtool check), the alert unit tests (promtool test rules), the dashboard
# and provisioning files (valid JSON / YAML). Installs Debian's `prometheus`
# package (which brings promtool and the prometheus binary the Rust test
# `cargo test -p catga-tests --test observability` needs) when promtool is missing.
#
#   tests/observability/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v promtool >/dev/null 2>&1; then
    echo "==> installing Debian's prometheus package (promtool, prometheus)"
    as_root apt-get update -qq
    # On a machine with systemd this also starts (and enables) a prometheus
    # service on :9090; the checks and the Rust test do not use it (the test
    # starts its own on a free port). `systemctl disable --now prometheus` stops it.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool --version | head -n 1

failed=0
step() { # description command...
    local what="$1"
    shift
    echo "==> $what"
    if ! "$@"; then
        echo "FAILED: $what" >&2
        failed=1
    fi
}

step "promtool check rules" promtool check rules docker/observability/prometheus/alerts.yml
step "promtool check config" promtool check config docker/observability/prometheus/prometheus.yml
step "promtool test rules" promtool test rules docker/observability/prometheus/alerts.test.yml

json_ok() {
    local status=0
    for f in docker/observability/grafana/dashboards/*.json; do
        python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d.get("uid") and d.get("panels"), "no uid or panels"' "$f" \
            && echo "  $f: valid JSON" || status=1
    done
    return "$status"
}
if command -v python3 >/dev/null 2>&1; then
    step "dashboards are valid JSON" json_ok
else
    echo "==> python3 missing: dashboard JSON is checked by cargo test -p catga-tests --test observability"
fi

if [ -x k8s/tools/sync.sh ] && command -v kubectl >/dev/null 2>&1; then
    step "k8s ConfigMaps generated from docker/observability/ are up to date" k8s/tools/sync.sh --check
fi

if [ "$failed" -ne 0 ]; then
    echo "observability checks FAILED" >&2
    exit 1
fi
echo "observability checks passed"
