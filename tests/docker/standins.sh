#!/usr/bin/env bash
# Builds local stand-ins for every upstream image that docker/Dockerfile and
# docker/compose.yaml name, so that those files are used unchanged on a machine
# that can reach Debian's package mirror and crates.io but no container
# registry. Sourced by tests/docker/run.sh; can also be run on its own.
#
# Every stand-in starts from one Debian bookworm root made with debootstrap and
# cached as a tarball. Images carry the label org.catga.test.recipe=<hash of
# what made them>; an image whose tag exists with the same label is kept.
set -euo pipefail

STANDINS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$STANDINS_DIR/../.." && pwd)"
CACHE_DIR="${CATGA_DOCKER_CACHE:-/var/cache/catga-docker-test}"
RECIPE_LABEL=org.catga.test.recipe

# The names the project's Dockerfile and Compose file use. Keep in sync with
# docker/Dockerfile (FROM) and docker/compose.yaml (image:); run.sh checks.
IMG_RUST="rust:1.95.0-slim-bookworm"
IMG_RUNTIME="gcr.io/distroless/cc-debian12:nonroot"
IMG_NATS="nats:2.12.15-alpine"
IMG_REDIS="redis:7.2.12-alpine"
IMG_PROMETHEUS="prom/prometheus:v2.54.1"
# Test-only helpers (not referenced by docker/).
IMG_BASE_REPO="catga-test/bookworm"
IMG_TOOLCHAIN_REPO="catga-test/rust-toolchain"
IMG_WEBHOOK="catga-test/webhook-sink:local"

RUST_TOOLCHAIN="1.95.0-x86_64-unknown-linux-gnu"

# One root for all stand-ins: the runtime libraries distroless/cc carries, a C
# toolchain for -sys crates (ring, aws-lc-sys), and the servers Compose runs.
ROOTFS_PACKAGES="ca-certificates,tzdata,netbase,libssl3,libgcc-s1,libstdc++6,libgomp1,gcc,libc6-dev,make,pkg-config,python3,nats-server,redis-server,wget,prometheus"
# distroless/cc-debian12 contents: glibc, libgcc, libgomp, libstdc++, libssl,
# CA certificates, tzdata, netbase, base-files; no shell, no package manager.
DISTROLESS_PACKAGES="base-files netbase tzdata ca-certificates libc6 libgcc-s1 libgomp1 libstdc++6 libssl3"

log() { printf '[standins] %s\n' "$*" >&2; }

hash_of() { sha256sum | cut -c1-16; }

image_recipe() { docker image inspect --format "{{ index .Config.Labels \"$RECIPE_LABEL\" }}" "$1" 2>/dev/null || true; }

# The Debian mirror apt on this host uses (so no host name is written here).
debian_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then echo "$DEBIAN_MIRROR"; return; fi
    local uri
    uri="$( (cat /etc/apt/sources.list.d/*.sources 2>/dev/null || true) \
        | awk '/^URIs:/ {print $2}' | grep -v -- '-security' | head -n1)"
    if [[ -z "$uri" ]]; then
        uri="$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | grep -v -- '-security' | awk '{print $2}' | head -n1 || true)"
    fi
    [[ -n "$uri" ]] || { log "cannot find a Debian mirror in apt's sources; set DEBIAN_MIRROR"; return 1; }
    echo "$uri"
}

# Prints the path of the cached debootstrap tarball, making it if needed.
rootfs_tarball() {
    local key tarball
    key="$(printf 'bookworm minbase %s v1' "$ROOTFS_PACKAGES" | hash_of)"
    tarball="$CACHE_DIR/rootfs-bookworm-$key.tar"
    if [[ ! -s "$tarball" ]]; then
        command -v debootstrap >/dev/null || {
            log "installing debootstrap"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
        }
        local mirror root
        mirror="$(debian_mirror)"
        root="$CACHE_DIR/rootfs-build"
        rm -rf "$root"; mkdir -p "$root"
        log "debootstrap bookworm into $root (a few minutes, once)"
        debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" bookworm "$root" "$mirror" \
            >"$CACHE_DIR/debootstrap.log" 2>&1 || {
            tail -n 30 "$CACHE_DIR/debootstrap.log" >&2; return 1; }
        # Trim what no image needs.
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
            "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
        tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$root"
    fi
    echo "$tarball"
}

# docker build of a recipe folder under standins/, skipped when the tag exists
# with the same recipe hash. Extra arguments go to docker build.
build_recipe() {
    local tag="$1" dir="$2" key="$3"; shift 3
    if [[ "$(image_recipe "$tag")" == "$key" ]]; then log "$tag: cached"; return; fi
    log "$tag: building"
    if ! docker build --label "$RECIPE_LABEL=$key" -t "$tag" "$@" "$dir" >"$CACHE_DIR/build.log" 2>&1; then
        tail -n 40 "$CACHE_DIR/build.log" >&2; return 1
    fi
}

recipe_key() {  # recipe_key PARENT_KEY FILE_OR_DIR... (+ stdin-free extra strings via KEY_EXTRA)
    local parent="$1"; shift
    { echo "$parent"; echo "${KEY_EXTRA:-}"; find "$@" -type f -print0 | sort -z | xargs -0 sha256sum | awk '{print $1}'; } | hash_of
}

# catga-test/bookworm:<key>: the whole debootstrap root, as one layer that
# every Debian-based stand-in shares.
ensure_base() {
    local tarball key
    tarball="$(rootfs_tarball)"
    key="$(basename "$tarball" .tar | sed 's/^rootfs-bookworm-//')"
    BASE_IMAGE="$IMG_BASE_REPO:$key"
    if [[ "$(image_recipe "$BASE_IMAGE")" != "$key" ]]; then
        log "$BASE_IMAGE: importing $tarball"
        docker import \
            --change "LABEL $RECIPE_LABEL=$key" \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' \
            "$tarball" "$BASE_IMAGE" >/dev/null
    else
        log "$BASE_IMAGE: cached"
    fi
    BASE_KEY="$key"
}

ensure_distroless() {
    local key tarball root
    key="$(KEY_EXTRA="$DISTROLESS_PACKAGES" recipe_key "$BASE_KEY" "$STANDINS_DIR/standins/distroless.py")"
    if [[ "$(image_recipe "$IMG_RUNTIME")" == "$key" ]]; then log "$IMG_RUNTIME: cached"; return; fi
    log "$IMG_RUNTIME: making from Debian packages ($DISTROLESS_PACKAGES)"
    root="$CACHE_DIR/distroless-root"
    rm -rf "$root"; mkdir -p "$root"
    tar -C "$root" --numeric-owner -xf "$(rootfs_tarball)"
    # shellcheck disable=SC2086
    python3 "$STANDINS_DIR/standins/distroless.py" "$root" "$CACHE_DIR/distroless.tar" $DISTROLESS_PACKAGES
    rm -rf "$root"
    docker import \
        --change "LABEL $RECIPE_LABEL=$key" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'USER 65532' \
        --change 'WORKDIR /home/nonroot' \
        "$CACHE_DIR/distroless.tar" "$IMG_RUNTIME" >/dev/null
    rm -f "$CACHE_DIR/distroless.tar"
}

# The host's rustup toolchain RUST_TOOLCHAIN (only it, without its docs).
host_toolchain_dir() {
    local home="${RUSTUP_HOME:-$HOME/.rustup}" dir
    dir="$(realpath "$home/toolchains/$RUST_TOOLCHAIN" 2>/dev/null || true)"
    if [[ -z "$dir" || ! -x "$dir/bin/rustc" ]]; then
        log "no rustup toolchain $RUST_TOOLCHAIN under $home/toolchains"; return 1
    fi
    echo "$dir"
}

copy_tree() {  # hard links where possible: cheap and the same bytes
    cp -al "$1" "$2" 2>/dev/null || { rm -rf "$2"; cp -a "$1" "$2"; }
}

ensure_rust() {
    local tc_dir rustup_bin tc_key key ctx lock_key
    tc_dir="$(host_toolchain_dir)"
    rustup_bin="$(command -v rustup || echo "${CARGO_HOME:-$HOME/.cargo}/bin/rustup")"
    tc_key="$(KEY_EXTRA="$("$tc_dir/bin/rustc" -vV; "$tc_dir/bin/cargo" -V; sha256sum <"$rustup_bin")" \
        recipe_key "$BASE_KEY" "$STANDINS_DIR/standins/toolchain")"
    TOOLCHAIN_IMAGE="$IMG_TOOLCHAIN_REPO:$tc_key"
    if [[ "$(image_recipe "$TOOLCHAIN_IMAGE")" != "$tc_key" ]]; then
        ctx="$CACHE_DIR/toolchain-ctx"
        rm -rf "$ctx"; mkdir -p "$ctx/rustup/toolchains" "$ctx/cargo/bin"
        cp "$STANDINS_DIR/standins/toolchain/Dockerfile" "$ctx/"
        copy_tree "$tc_dir" "$ctx/rustup/toolchains/$RUST_TOOLCHAIN"
        rm -rf "$ctx/rustup/toolchains/$RUST_TOOLCHAIN/share/doc" \
               "$ctx/rustup/toolchains/$RUST_TOOLCHAIN/lib/rustlib/src"
        printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n\n[overrides]\n' \
            "$RUST_TOOLCHAIN" > "$ctx/rustup/settings.toml"
        cp "$rustup_bin" "$ctx/cargo/bin/rustup"
        build_recipe "$TOOLCHAIN_IMAGE" "$ctx" "$tc_key" --build-arg "BASE=$BASE_IMAGE"
        rm -rf "$ctx"
    else
        log "$TOOLCHAIN_IMAGE: cached"
    fi

    lock_key="$(sha256sum <"$REPO_ROOT/Cargo.lock" | cut -c1-16)"
    key="$(KEY_EXTRA="$lock_key" recipe_key "$tc_key" "$STANDINS_DIR/standins/rust")"
    if [[ "$(image_recipe "$IMG_RUST")" == "$key" ]]; then log "$IMG_RUST: cached"; return; fi
    log "fetching the crates of Cargo.lock into $CACHE_DIR/cargo-home"
    CARGO_HOME="$CACHE_DIR/cargo-home" cargo fetch --locked --quiet --manifest-path "$REPO_ROOT/Cargo.toml"
    ctx="$CACHE_DIR/rust-ctx"
    rm -rf "$ctx"; mkdir -p "$ctx/registry"
    cp "$STANDINS_DIR/standins/rust/Dockerfile" "$ctx/"
    copy_tree "$CACHE_DIR/cargo-home/registry/index" "$ctx/registry/index"
    copy_tree "$CACHE_DIR/cargo-home/registry/cache" "$ctx/registry/cache"
    build_recipe "$IMG_RUST" "$ctx" "$key" --build-arg "TOOLCHAIN=$TOOLCHAIN_IMAGE"
    rm -rf "$ctx"
}

ensure_simple() {  # ensure_simple TAG RECIPE_DIR
    local key
    key="$(recipe_key "$BASE_KEY" "$STANDINS_DIR/standins/$2")"
    build_recipe "$1" "$STANDINS_DIR/standins/$2" "$key" --build-arg "BASE=$BASE_IMAGE"
}

# Makes every image the project's Docker files and the test need. Images
# that cannot be made without a registry (Grafana, Jaeger) are left out.
ensure_standins() {
    mkdir -p "$CACHE_DIR"
    ensure_base
    ensure_distroless
    ensure_rust
    ensure_simple "$IMG_NATS" nats
    ensure_simple "$IMG_REDIS" redis
    ensure_simple "$IMG_PROMETHEUS" prometheus
    ensure_simple "$IMG_WEBHOOK" webhook
    # Drop the tags of earlier recipes (an image that still has children,
    # e.g. build cache layers, is only untagged).
    local tag
    for tag in $(docker images --format '{{.Repository}}:{{.Tag}}' "$IMG_BASE_REPO") \
               $(docker images --format '{{.Repository}}:{{.Tag}}' "$IMG_TOOLCHAIN_REPO"); do
        [[ "$tag" == "$BASE_IMAGE" || "$tag" == "$TOOLCHAIN_IMAGE" ]] || docker rmi "$tag" >/dev/null 2>&1 || true
    done
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    ensure_standins
fi
