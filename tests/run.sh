#!/usr/bin/env bash
# Runs the project's tests on a fresh machine: installs what they need
# (nats-server and redis-server from Debian's packages), then checks
# formatting and lints and runs unit, router and end-to-end tests.
#
#   tests/run.sh            every suite
#   tests/run.sh rust       only the Rust suites (fmt, clippy, unit, e2e)
set -euo pipefail
cd "$(dirname "$0")/.."

suites=("$@")
if [ ${#suites[@]} -eq 0 ]; then
    suites=(rust)
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
    install_packages nats-server redis-server
    echo "==> cargo fmt --check"
    cargo fmt --all -- --check
    echo "==> cargo clippy"
    cargo clippy --workspace --all-targets --locked -- -D warnings
    echo "==> building the service binaries the end-to-end tests start"
    cargo build --workspace --bins --locked
    echo "==> cargo test"
    cargo test --workspace --locked
}

for suite in "${suites[@]}"; do
    case "$suite" in
        rust) run_rust ;;
        *) echo "unknown suite: $suite (known: rust)" >&2; exit 2 ;;
    esac
done
