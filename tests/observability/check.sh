#!/usr/bin/env bash
# Static checks of docker/observability/: the Prometheus rule file and configuration
# (promtool check), the alert unit tests (promtool test rules), the dashboard
# and provisioning files (valid JSON / YAML), and the Alertmanager
# configuration of the Kubernetes manifests (amtool check-config). Installs
# Debian's `prometheus` (promtool and the prometheus binary the Rust test
# `cargo test -p catga-tests --test observability` needs),
# `prometheus-alertmanager` (amtool) and `prometheus-redis-exporter` (the
# real redis_exporter the Rust test scrapes) when missing.
#
#   tests/observability/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v prometheus-redis-exporter >/dev/null 2>&1 || missing+=(prometheus-redis-exporter)
if ((${#missing[@]})); then
    echo "==> installing Debian's ${missing[*]}"
    as_root apt-get update -qq
    # On a machine with systemd this also starts (and enables) their services
    # (prometheus on :9090, alertmanager on :9093, redis exporter on :9121);
    # the checks and the Rust tests do not use them (they start their own on
    # free ports). `systemctl disable --now <service>` stops them.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
promtool --version | head -n 1
amtool --version 2>&1 | head -n 1

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

# Alertmanager (k8s/30-monitoring.yml): the configuration as shipped, and as
# the container's start script renders it with a webhook URL from the Secret
# (one with the characters sed treats specially), both pass amtool.
alertmanager_ok() {
    local work status=0
    work="$(mktemp -d)"
    python3 - k8s/30-monitoring.yml "$work" <<'PY' || status=1
import sys, yaml
manifest, work = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(manifest)) if d]
config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "alertmanager-config")
open(f"{work}/alertmanager.yml", "w").write(config["data"]["alertmanager.yml"])
deploy = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "alertmanager")
script = deploy["spec"]["template"]["spec"]["containers"][0]["command"][2]
# The script as the container runs it, pointed at this folder and at amtool
# instead of the server.
script = script.replace("/etc/alertmanager/", f"{work}/").replace("/run/alertmanager/", f"{work}/run-")
script = script.replace("exec /bin/alertmanager --config.file=", "exec amtool check-config ").split(" \\\n")[0]
open(f"{work}/start.sh", "w").write(script + "\n")
PY
    if ((status == 0)); then
        amtool check-config "$work/alertmanager.yml" || status=1
        local url='https://hooks.example.invalid/services/T0|B1&x=1\\y'
        ALERT_WEBHOOK_URL="$url" sh "$work/start.sh" || status=1
        grep -qF "url: $url" "$work/run-alertmanager.yml" || { echo "the webhook URL was not written as given" >&2; status=1; }
        # Without the Secret's key the container refuses to start, saying why.
        if env -u ALERT_WEBHOOK_URL sh "$work/start.sh" 2>"$work/err"; then status=1; fi
        grep -q "alertmanager-webhook-url" "$work/err" || status=1
    fi
    rm -rf "$work"
    return "$status"
}
step "amtool check-config (Alertmanager of k8s/30-monitoring.yml, with a webhook URL)" alertmanager_ok

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
