#!/usr/bin/env bash
# Runs the project's tests on a fresh machine: installs what they need
# (nats-server, redis-server and prometheus from Debian's packages; Python
# validators into a virtualenv), then runs every suite.
#
#   tests/run.sh                 every suite
#   tests/run.sh rust k8s        only the named suites
#
# Suites:
#   rust           fmt, clippy, unit, router, end-to-end, tracing, Prometheus
#                  and manifest-conformance tests (cargo test --workspace)
#   observability  promtool checks and rule unit tests, dashboard JSON
#   k8s            Kubernetes schema validation (strict), kustomize overlays, checkov
#   faults         the fault-injection suite: a 3-node NATS cluster, Redis with AOF,
#                  replicas killed and restarted under load (CATGA_FAULT_ORDERS)
#   containers     docker build of the three images exactly as docs/containers.md
#                  says, image checks, the Compose stack under load with a NATS
#                  node and a replica stopped (base images made locally)
set -euo pipefail
cd "$(dirname "$0")/.."

suites=("$@")
if [ ${#suites[@]} -eq 0 ]; then
    suites=(rust observability k8s faults containers)
fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> installing ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

run_rust() {
    install_packages nats-server redis-server redis-sentinel prometheus prometheus-redis-exporter chromium chromium-driver
    echo "==> cargo fmt --check"
    cargo fmt --all -- --check
    echo "==> cargo clippy"
    cargo clippy --workspace --all-targets --locked -- -D warnings
    echo "==> building the service binaries the end-to-end tests start"
    cargo build --workspace --bins --locked
    echo "==> cargo test"
    cargo test --workspace --locked
}

run_faults() {
    install_packages nats-server redis-server redis-sentinel
    echo "==> fault-injection suite (binaries with failpoints compiled in)"
    cargo build --workspace --bins --locked --features catga-core/failpoints
    cargo test -p catga-tests --test faults --locked -- --ignored --nocapture
}

for suite in "${suites[@]}"; do
    case "$suite" in
        rust) run_rust ;;
        observability) tests/observability/check.sh ;;
        k8s) tests/k8s/validate.sh ;;
        faults) run_faults ;;
        containers) bash tests/docker/run.sh ;;
        *) echo "unknown suite: $suite (known: rust observability k8s faults containers)" >&2; exit 2 ;;
    esac
done
