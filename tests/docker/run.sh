#!/usr/bin/env bash
# Container test of the Catga order system: the real docker/Dockerfile and
# docker/compose.yaml, on a machine whose Docker engine has no registry.
#
#   1. makes local stand-ins for every base image they name (standins.sh);
#   2. builds the images with the commands docs/containers.md gives (one
#      target of docker/Dockerfile per image: the three services and loadgen)
#      and checks each: non-root, read-only root
#      filesystem, no shell, size, labels; the images run in distributed
#      mode (no NATS__Url: exit 2 with one line naming it); the services
#      answer /health, loadgen runs and refuses bad arguments with status 2;
#   3. brings the Compose stack up (not the observability profile's Grafana
#      and Jaeger, which cannot be made locally; Prometheus is); the deps
#      profile (NATS and Redis alone on loopback ports) separately;
#   4. drives it with the loadgen image on the stack's network (fixed rate,
#      every order followed to its final state);
#   5. places orders while one NATS node, the Redis master (Sentinel promotes
#      a replica; the old master comes back as its replica) and one
#      order-service replica are stopped, and checks that every accepted
#      order is confirmed (or rejected) and notified;
#   6. tears everything down and checks that no container, network or volume
#      of its project is left.
#
# Usage: bash tests/docker/run.sh        (as root or a docker group member)
# Env:   CATGA_DOCKER_CACHE  cache folder (default /var/cache/catga-docker-test)
#        CATGA_IT_ORDERS     orders to place (default 300)
#        CATGA_IT_LOADGEN    loadgen's options for step 4 (default --rate 20 --duration 10s)
#        CATGA_IT_KEEP=1     leave the stack up on failure, for debugging
# Prints one line per check and closes with "N passed, N failed".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
# shellcheck source=tests/docker/standins.sh
source "$HERE/standins.sh"

PROJECT="catga-it-$$"
# The HS256 secret the stack's order-api runs with: docker/compose.yaml's
# default unless the caller set one. loadgen and load.py mint tokens from it.
if [ -z "${AUTH_JWT_SECRET:-}" ]; then
    AUTH_JWT_SECRET="$(sed -n 's/.*Auth__JwtSecret: ${AUTH_JWT_SECRET:-\([^}]*\)}.*/\1/p' docker/compose.yaml)"
fi
[ -n "$AUTH_JWT_SECRET" ] || { echo "cannot read Auth__JwtSecret's default from docker/compose.yaml" >&2; exit 2; }
export AUTH_JWT_SECRET
ORDERS="${CATGA_IT_ORDERS:-300}"
WORK="$(mktemp -d)"
START_TS=$(date +%s)
PASSED=0
FAILED=0
FAILURES=()
STANDALONE=()   # containers started with docker run

say() { printf '\n== %s\n' "$*"; }
pass() { PASSED=$((PASSED + 1)); printf 'PASS  %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$*"); printf 'FAIL  %s\n' "$*"; }
check() {  # check DESCRIPTION COMMAND...
    local what="$1"; shift
    if "$@" >>"$WORK/checks.log" 2>&1; then pass "$what"; else fail "$what"; fi
}

if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
else
    echo "neither 'docker compose' nor docker-compose is installed" >&2; exit 1
fi
COMPOSE_FILES=(-f docker/compose.yaml -f tests/docker/compose.test.yaml)
compose() { "${COMPOSE[@]}" -p "$PROJECT" "${COMPOSE_FILES[@]}" "$@"; }

project_containers() { docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" "$@"; }
service_containers() { docker ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1"; }

DEPS_PROJECT="$PROJECT-deps"
deps_compose() { "${COMPOSE[@]}" -p "$DEPS_PROJECT" -f docker/compose.yaml --profile deps "$@"; }

teardown() {
    local ids
    deps_compose down -v -t 5 >"$WORK/deps-down.log" 2>&1 || true
    for c in "${STANDALONE[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
    STANDALONE=()
    compose --profile observability down -v --remove-orphans -t 10 >"$WORK/down.log" 2>&1 || true
    # Whatever compose missed (e.g. after an interrupted up).
    ids="$(project_containers)"; [[ -z "$ids" ]] || docker rm -f $ids >/dev/null 2>&1 || true
    ids="$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")"
    [[ -z "$ids" ]] || docker network rm $ids >/dev/null 2>&1 || true
    ids="$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")"
    [[ -z "$ids" ]] || docker volume rm -f $ids >/dev/null 2>&1 || true
}
FINISHED=0
on_exit() {
    local rc=$?
    if ((FINISHED == 0)); then
        printf '\naborted (exit %s) after: %s\n' "$rc" "${FAILURES[*]:-no failed check}"
        printf 'docker: %s passed, %s failed\n' "$PASSED" "$((FAILED + 1))"
        ((rc != 0)) || rc=1
    fi
    if [[ "${CATGA_IT_KEEP:-0}" == 1 && $rc -ne 0 ]]; then
        echo "CATGA_IT_KEEP=1: leaving project $PROJECT up; remove it with: ${COMPOSE[*]} -p $PROJECT ${COMPOSE_FILES[*]} --profile observability down -v" >&2
    else
        teardown
    fi
    rm -rf "$WORK"
    exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_code() { curl -s -o /dev/null -m 3 -w '%{http_code}' "$1" || true; }
wait_http() {  # wait_http URL SECONDS -> 0 when 200 within the time
    local deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        [[ "$(http_code "$1")" == 200 ]] && return 0
        sleep 0.5
    done
    return 1
}

declare -A PORT=([order-api]=8080 [order-service]=8081 [notification-service]=8082)
# Where /health and /metrics answer: order-api's ops port (Http__OpsPort), else the same port.
declare -A OPS_PORT=([order-api]=8090 [order-service]=8081 [notification-service]=8082)
# Long-running services (health endpoint, HEALTHCHECK, ports) and batch tools.
SERVICES=(order-api order-service notification-service)
TOOLS=(loadgen)
VERSION="$(grep -m1 -E '^version *=' Cargo.toml | sed -E 's/.*"(.*)".*/\1/')"

###########################################################################
say "1. base images (local stand-ins, cache: $CACHE_DIR)"
t=$SECONDS
ensure_standins
STANDIN_SECONDS=$((SECONDS - t))
echo "stand-ins ready in ${STANDIN_SECONDS}s"

# Every FROM of the Dockerfile (but its own stages) and every image of the
# Compose file (but the ones built here, and Grafana/Jaeger of the
# observability profile) exists.
mapfile -t FROMS < <(awk 'toupper($1)=="FROM" {print $2} toupper($3)=="AS" {print "stage:" $4}' docker/Dockerfile \
    | awk '/^stage:/ {stages[substr($0, 7)] = 1; next} {froms[$0] = 1} END {for (f in froms) if (!(f in stages)) print f}' | sort -u)
mapfile -t COMPOSE_IMAGES < <("${COMPOSE[@]}" -f docker/compose.yaml --profile observability --profile deps config \
    | awk '$1=="image:" {print $2}' | sort -u)
for image in "${FROMS[@]}" "${COMPOSE_IMAGES[@]}"; do
    case "$image" in
        catga/*) continue ;;
        grafana/*|jaegertracing/*) echo "skip  $image (observability profile; no local stand-in)"; continue ;;
    esac
    check "base image $image is available locally" docker image inspect "$image"
done

###########################################################################
say "2. images: built with the commands of docs/containers.md"
mapfile -t BUILD_CMDS < <(grep -E '^docker build -f docker/Dockerfile --target [a-z-]+ ' docs/containers.md)
check "docs/containers.md gives one build command per image (${#BUILD_CMDS[@]})" \
    test "${#BUILD_CMDS[@]}" -eq $((${#SERVICES[@]} + ${#TOOLS[@]}))
for image in "${SERVICES[@]}" "${TOOLS[@]}"; do
    check "docs/containers.md builds catga/$image:$VERSION from target $image of docker/Dockerfile" \
        bash -c "printf '%s\n' \"\$@\" | grep -q -- '-f docker/Dockerfile --target $image -t catga/$image:$VERSION '" _ "${BUILD_CMDS[@]}"
    check "docker/docker-bake.hcl builds image $image (its matrix)" \
        bash -c "grep -E '^ *image = \\[' docker/docker-bake.hcl | grep -q '\"$image\"'"
done
declare -A BUILD_SECONDS
BEFORE_BUILD="$(docker ps -aq)"
for cmd in "${BUILD_CMDS[@]}"; do
    svc="$(sed -E 's|.*--target ([a-z-]+) .*|\1|' <<<"$cmd")"
    echo "\$ $cmd"
    t=$SECONDS
    if bash -c "$cmd" >"$WORK/build-$svc.log" 2>&1; then
        BUILD_SECONDS[$svc]=$((SECONDS - t))
        pass "docker build $svc (${BUILD_SECONDS[$svc]}s)"
    else
        tail -n 40 "$WORK/build-$svc.log"
        fail "docker build $svc"
        # The classic builder keeps the container of a failed step.
        for id in $(docker ps -aq --filter status=exited --filter status=created); do
            grep -qx "$id" <<<"$BEFORE_BUILD" && continue
            [[ -z "$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' "$id")" ]] \
                && docker rm "$id" >/dev/null
        done
    fi
done

declare -A SIZE_MB
# exits_naming_the_setting IMAGE SETTING DOCKER-RUN-ARGS...: the container
# stops by itself with status 2 and prints one line, which names SETTING.
exits_naming_the_setting() {
    local image="$1" setting="$2" out rc=0
    shift 2
    out="$(timeout 60 docker run --rm --read-only --cap-drop ALL "$@" "$image" 2>&1)" || rc=$?
    printf 'exit %s: %s\n' "$rc" "$out"
    [[ $rc -eq 2 && "$(printf '%s\n' "$out" | wc -l)" -eq 1 && "$out" == *"$setting"* ]]
}
# The size budget of every image. 40 MB until order-api gained the identity
# provider's key handling (RSA, P-256) and the vendored Swagger UI (a 1.8 MB
# archive) of /api/docs, which a build without a CDN must carry: 45 MB since.
MAX_IMAGE_MB=45
for svc in "${SERVICES[@]}"; do
    image="catga/$svc:$VERSION"
    port="${PORT[$svc]}"
    if ! docker image inspect "$image" >/dev/null 2>&1; then fail "$image exists"; continue; fi
    user="$(docker image inspect -f '{{.Config.User}}' "$image")"
    check "$svc: runs as a numeric non-root user ($user)" bash -c "[[ '$user' =~ ^[1-9][0-9]*(:[0-9]+)?$ ]]"
    check "$svc: binary is the entrypoint" \
        test "$(docker image inspect -f '{{json .Config.Entrypoint}}' "$image")" = "[\"/usr/local/bin/$svc\"]"
    check "$svc: exposes $port" bash -c "docker image inspect -f '{{json .Config.ExposedPorts}}' '$image' | grep -q '\"$port/tcp\"'"
    check "$svc: OCI labels" bash -c "docker image inspect -f '{{json .Config.Labels}}' '$image' | grep -q '\"org.opencontainers.image.title\":\"$svc\"' && docker image inspect -f '{{json .Config.Labels}}' '$image' | grep -q '\"org.opencontainers.image.version\":\"$VERSION\"'"
    check "$svc: image health check is the binary's healthcheck subcommand" \
        bash -c "docker image inspect -f '{{json .Config.Healthcheck.Test}}' '$image' | grep -q '\"/usr/local/bin/$svc\",\"healthcheck\"'"
    check "$svc: no shell in the image" bash -c "! docker run --rm --entrypoint /bin/sh '$image' -c true"
    check "$svc: no compiler in the image" bash -c "! docker run --rm --entrypoint /usr/bin/cc '$image' --version"
    size=$(docker image inspect -f '{{.Size}}' "$image")
    SIZE_MB[$svc]=$(awk -v s="$size" 'BEGIN {printf "%.1f", s/1000000}')
    check "$svc: image is under $MAX_IMAGE_MB MB (${SIZE_MB[$svc]} MB)" test "$size" -lt $((MAX_IMAGE_MB * 1000000))

    # The image is in distributed mode: a container without NATS__Url (or
    # with it misspelled) stops at once, naming the setting on one line.
    check "$svc: without NATS__Url the container exits 2 with one line naming it" \
        exits_naming_the_setting "$image" NATS__Url -e Redis__Configuration=redis:6379
    check "$svc: a misspelled NATS__Url (Nats__Url) is named too" \
        exits_naming_the_setting "$image" NATS__Url -e Nats__Url=nats://nats:4222 -e Redis__Configuration=redis:6379
    check "$svc: without Redis__Configuration the container exits 2 naming it" \
        exits_naming_the_setting "$image" Redis__Configuration -e NATS__Url=nats://nats:4222

    # Alone, read-only, no capabilities: order-api runs its embedded mode
    # (asked for explicitly) and is ready; the consumers, pointed at servers
    # that are not there, answer /health (ready needs NATS and Redis).
    name="$PROJECT-$svc-solo"
    STANDALONE+=("$name")
    hport="$(free_port)"
    ops_args=(); [[ ${OPS_PORT[$svc]} != "$port" ]] && ops_args=(-p "127.0.0.1:$(free_port):${OPS_PORT[$svc]}")
    if [[ $svc == order-api ]]; then
        mode_args=(-e Catga__Mode=embedded)
    else
        mode_args=(-e NATS__Url=nats://127.0.0.1:4222 -e Redis__Configuration=127.0.0.1:6379)
    fi
    docker run -d --name "$name" --read-only --cap-drop ALL --security-opt no-new-privileges \
        "${mode_args[@]}" -p "127.0.0.1:$hport:$port" "${ops_args[@]}" "$image" >/dev/null
    hport="$(docker port "$name" "${OPS_PORT[$svc]}/tcp" | head -n1 | sed 's/.*://')"
    check "$svc: answers /health with a read-only root filesystem" wait_http "http://127.0.0.1:$hport/health" 20
    check "$svc: container root filesystem is read-only" \
        test "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$name")" = true
    check "$svc: process runs as uid 65532" \
        bash -c "docker top '$name' -o pid,uid | awk 'NR>1 {print \$2}' | grep -qx 65532"
    if [[ $svc == order-api ]]; then
        check "order-api: embedded mode is ready alone" wait_http "http://127.0.0.1:$hport/health/ready" 20
        check "order-api: 'healthcheck' subcommand exits 0 when ready" docker exec "$name" /usr/local/bin/order-api healthcheck
    else
        check "$svc: 'healthcheck' subcommand exits non-zero while NATS/Redis are away" \
            bash -c "! docker exec '$name' /usr/local/bin/$svc healthcheck"
    fi
    docker rm -f "$name" >/dev/null
done
STANDALONE=()

# loadgen: a batch tool, so no port, no health check; it must run read-only
# as 65532 and tell a usage error (status 2) from a failed run (status 1).
LOADGEN="catga/loadgen:$VERSION"
if docker image inspect "$LOADGEN" >/dev/null 2>&1; then
    user="$(docker image inspect -f '{{.Config.User}}' "$LOADGEN")"
    check "loadgen: runs as uid 65532 ($user)" bash -c "[[ '$user' =~ ^65532(:65532)?$ ]]"
    check "loadgen: binary is the entrypoint" \
        test "$(docker image inspect -f '{{json .Config.Entrypoint}}' "$LOADGEN")" = '["/usr/local/bin/loadgen"]'
    check "loadgen: OCI labels" bash -c "docker image inspect -f '{{json .Config.Labels}}' '$LOADGEN' | grep -q '\"org.opencontainers.image.title\":\"loadgen\"' && docker image inspect -f '{{json .Config.Labels}}' '$LOADGEN' | grep -q '\"org.opencontainers.image.version\":\"$VERSION\"'"
    check "loadgen: no health check, no exposed port (a batch job)" \
        test "$(docker image inspect -f '{{json .Config.Healthcheck}} {{json .Config.ExposedPorts}}' "$LOADGEN")" = "null null"
    check "loadgen: no shell in the image" bash -c "! docker run --rm --entrypoint /bin/sh '$LOADGEN' -c true"
    check "loadgen: no compiler in the image" bash -c "! docker run --rm --entrypoint /usr/bin/cc '$LOADGEN' --version"
    size=$(docker image inspect -f '{{.Size}}' "$LOADGEN")
    SIZE_MB[loadgen]=$(awk -v s="$size" 'BEGIN {printf "%.1f", s/1000000}')
    check "loadgen: image is under $MAX_IMAGE_MB MB (${SIZE_MB[loadgen]} MB)" test "$size" -lt $((MAX_IMAGE_MB * 1000000))
    check "loadgen: --version runs read-only without capabilities" bash -c \
        "docker run --rm --read-only --cap-drop ALL --security-opt no-new-privileges '$LOADGEN' --version | grep -qx 'loadgen $VERSION'"
    check "loadgen: a usage error exits 2" bash -c \
        "docker run --rm --read-only '$LOADGEN' orders --rate 10 --concurrency 2; test \$? -eq 2"
else
    fail "$LOADGEN exists"
fi

###########################################################################
# The README's "Running distributed" path: only NATS and Redis, published on
# loopback ports, for services started with `cargo run`.
say "3a. Compose deps profile ($DEPS_PROJECT)"
export DEPS_NATS_PORT="$(free_port)" DEPS_REDIS_PORT="$(free_port)"
deps_compose up -d deps-nats deps-redis >"$WORK/deps-up.log" 2>&1 || { cat "$WORK/deps-up.log"; fail "compose --profile deps up"; }
nats_answers() {  # a NATS server greets every client with INFO
    local deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -c 4 <&3" 2>/dev/null | grep -q INFO && return 0
        sleep 0.5
    done
    return 1
}
redis_answers() {
    local deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        python3 - "$1" <<'PY' && return 0
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
        sleep 0.5
    done
    return 1
}
check "deps profile: NATS answers on 127.0.0.1:$DEPS_NATS_PORT" nats_answers "$DEPS_NATS_PORT"
check "deps profile: Redis answers PING on 127.0.0.1:$DEPS_REDIS_PORT" redis_answers "$DEPS_REDIS_PORT"
check "deps profile: NATS and Redis only (two containers)" \
    test "$(docker ps -q --filter "label=com.docker.compose.project=$DEPS_PROJECT" | wc -l)" -eq 2
check "deps profile: ports published on loopback only" bash -c \
    "! docker ps --filter 'label=com.docker.compose.project=$DEPS_PROJECT' --format '{{.Ports}}' | grep -q '0.0.0.0'"
deps_compose down -v -t 5 >"$WORK/deps-down.log" 2>&1 || fail "compose --profile deps down"

###########################################################################
say "3. Compose stack ($PROJECT, ${COMPOSE[*]})"
export ORDER_API_PORT="$(free_port)"
export PROMETHEUS_PORT="$(free_port)"
export REDIS_PASSWORD="it-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export CATGA_TAG="$VERSION"
unset CATGA_REGISTRY
API="http://127.0.0.1:$ORDER_API_PORT"
t=$SECONDS
compose up -d --no-build >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; fail "compose up"; }
# Prometheus only from the observability profile (Grafana and Jaeger need
# images that cannot be made here).
compose --profile observability up -d --no-build --no-deps prometheus >>"$WORK/up.log" 2>&1 \
    || { tail -n 20 "$WORK/up.log"; fail "compose up prometheus"; }
check "order-api answers through the published port" wait_http "$API/api/products" 120
UP_SECONDS=$((SECONDS - t))

all_healthy() {
    local deadline=$((SECONDS + $1)) bad
    while ((SECONDS < deadline)); do
        bad=0
        for id in $(project_containers); do
            # The operator step (nats-topology) runs once and exits 0.
            if [[ "$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$id")" == nats-topology ]]; then
                [[ "$(docker inspect -f '{{.State.Status}}/{{.State.ExitCode}}' "$id")" == exited/0 ]] || bad=1
                continue
            fi
            st="$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")"
            [[ "$st" == running/healthy || "$st" == running/none ]] || bad=1
        done
        ((bad == 0)) && return 0
        sleep 1
    done
    docker ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}} {{.Status}}'
    return 1
}
check "every container of the stack is running and healthy" all_healthy 120
check "three order-service replicas" test "$(service_containers order-service | wc -l)" -eq 3
nats_cluster_ok() {  # every node routes to the two others and sees one meta leader
    local leaders=() n id
    for n in 0 1 2; do
        id="$(service_containers nats-$n)"
        docker exec "$id" wget -qO- http://127.0.0.1:8222/routez \
            | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["num_routes"] >= 2 else 1)' || return 1
        leaders+=("$(docker exec "$id" wget -qO- http://127.0.0.1:8222/jsz \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["meta_cluster"].get("leader") or "")')")
    done
    [[ -n "${leaders[0]}" && "${leaders[0]}" == "${leaders[1]}" && "${leaders[1]}" == "${leaders[2]}" ]]
}
check "three NATS nodes in one JetStream cluster" nats_cluster_ok
# The Redis node the Sentinels name master (its Compose service name).
sentinel_master() {
    docker exec "$(service_containers redis-sentinel-0)" sh -c \
        'redis-cli -p 26379 -a "$REDIS_SENTINEL_PASSWORD" --no-auth-warning --raw sentinel get-master-addr-by-name mymaster' \
        | head -n1 | sed 's/\..*//' || true
}
sentinels_see_each_other() {  # each Sentinel counts three usable Sentinels (quorum and majority)
    local deadline=$((SECONDS + 30)) n ok
    while ((SECONDS < deadline)); do
        ok=0
        for n in 0 1 2; do
            docker exec "$(service_containers redis-sentinel-$n)" sh -c \
                'redis-cli -p 26379 -a "$REDIS_SENTINEL_PASSWORD" --no-auth-warning sentinel ckquorum mymaster' \
                | grep -q '^OK 3 usable' && ok=$((ok + 1))
        done
        ((ok == 3)) && return 0
        sleep 1
    done
    return 1
}
check "three Sentinels see each other and reach their quorum" sentinels_see_each_other
REDIS_MASTER_NAME="$(sentinel_master)"
REDIS_MASTER="$(service_containers "$REDIS_MASTER_NAME")"
check "the Sentinels name a Redis master ($REDIS_MASTER_NAME)" test -n "$REDIS_MASTER"
check "Redis master has two replicas with AOF on" bash -c \
    "docker exec $REDIS_MASTER sh -c 'redis-cli -a \"\$REDIS_PASSWORD\" --no-auth-warning info replication | grep -q connected_slaves:2 && redis-cli -a \"\$REDIS_PASSWORD\" --no-auth-warning config get appendonly | grep -qx yes'"
check "services run read-only as uid 65532" bash -c '
    for id in $(docker ps -q --filter "label=com.docker.compose.project='"$PROJECT"'" --filter label=com.docker.compose.service=order-api) \
              $(docker ps -q --filter "label=com.docker.compose.project='"$PROJECT"'" --filter label=com.docker.compose.service=order-service) \
              $(docker ps -q --filter "label=com.docker.compose.project='"$PROJECT"'" --filter label=com.docker.compose.service=notification-service); do
        [[ "$(docker inspect -f "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}" "$id")" == "true 65532:65532" ]] || exit 1
    done'
check "README path: curl the API" bash -c "curl -sf '$API/api/products' | grep -q PROD-001"

# Start-to-ready: docker start of a stopped container until /health/ready
# answers 200, with NATS and Redis up. order-api through its port; the
# consumers through a twin on the stack's network with a published port.
measure_ready() {  # measure_ready CONTAINER URL -> milliseconds on stdout
    python3 - "$1" "$2" <<'PY'
import datetime, re, subprocess, sys, time, urllib.request
name, url = sys.argv[1], sys.argv[2]
t0 = time.monotonic()
subprocess.run(["docker", "start", name], check=True, capture_output=True)
while time.monotonic() - t0 < 30:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            if r.status == 200:
                total = int((time.monotonic() - t0) * 1000)
                ready_at = datetime.datetime.now(datetime.timezone.utc)
                started = subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}}", name],
                                         check=True, capture_output=True, text=True).stdout.strip()
                started = re.sub(r"(\.\d{6})\d*", r"\1", started).replace("Z", "+00:00")
                process = int((ready_at - datetime.datetime.fromisoformat(started)).total_seconds() * 1000)
                print(total, process); sys.exit(0)
    except Exception:
        pass
    time.sleep(0.01)
sys.exit(1)
PY
}
NETWORK="$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT" | head -n1)"
declare -A READY_MS
for svc in "${SERVICES[@]}"; do
    src="$(service_containers "$svc" | head -n1)"
    twin="$PROJECT-$svc-twin"
    STANDALONE+=("$twin")
    hport="$(free_port)"
    mapfile -t envs < <(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$src" | grep -E '__|^REDIS_' )
    env_args=(); for e in "${envs[@]}"; do [[ -n "$e" ]] && env_args+=(-e "$e"); done
    docker create --name "$twin" --network "$NETWORK" --read-only --cap-drop ALL \
        "${env_args[@]}" -p "127.0.0.1:$hport:${OPS_PORT[$svc]}" "catga/$svc:$VERSION" >/dev/null
    best="" bestp=""
    for run in 1 2 3; do
        if out="$(measure_ready "$twin" "http://127.0.0.1:$hport/health/ready")"; then
            read -r ms pms <<<"$out"
            [[ -z "$best" || $ms -lt $best ]] && best=$ms
            [[ -z "$bestp" || $pms -lt $bestp ]] && bestp=$pms
            echo "$svc start-to-ready run $run: ${ms} ms from 'docker start', ${pms} ms from process start"
        fi
        docker stop -t 10 "$twin" >/dev/null
    done
    docker rm -f "$twin" >/dev/null
    READY_MS[$svc]="${best:-none} (process ${bestp:-none})"
    check "$svc: docker start to ready under 1 s (best of 3: ${best:-none} ms)" test -n "$best" -a "${best:-99999}" -lt 1000
done
STANDALONE=()

# Prometheus scrapes the services (docker/prometheus/prometheus.yml).
prom_up() {
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        if curl -s "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/targets" | python3 -c '
import json, sys
t = json.load(sys.stdin)["data"]["activeTargets"]
up = {}
for x in t:
    if x["labels"].get("job") == "catga":
        up.setdefault(x["labels"].get("app"), []).append(x["health"] == "up")
need = {"order-api": 1, "order-service": 3, "notification-service": 1}
sys.exit(0 if all(sum(up.get(j, [])) >= n for j, n in need.items()) else 1)'; then return 0; fi
        sleep 2
    done
    return 1
}
check "Prometheus (docker/observability/prometheus) scrapes order-api, 3 order-service replicas, notification-service" prom_up

###########################################################################
# The image as docs/containers.md runs it: on the stack's network, by
# service name, read-only. Exit 0 means every order was accepted and final.
read -r -a LOADGEN_ARGS <<<"${CATGA_IT_LOADGEN:---rate 20 --duration 10s}"
say "4. loadgen drives the stack: orders ${LOADGEN_ARGS[*]}"
lg_cmd=(docker run --rm --name "$PROJECT-loadgen" --network "$NETWORK" --read-only --cap-drop ALL
        --security-opt no-new-privileges -e LOADGEN_JWT_SECRET="$AUTH_JWT_SECRET" "$LOADGEN"
        orders --url http://order-api:8080 "${LOADGEN_ARGS[@]}" --json)
echo "\$ ${lg_cmd[*]}"
STANDALONE+=("$PROJECT-loadgen")
t=$SECONDS
LG_RC=0
"${lg_cmd[@]}" >"$WORK/loadgen.json" 2>"$WORK/loadgen.log" || LG_RC=$?
LOADGEN_SECONDS=$((SECONDS - t))
STANDALONE=()
tail -n 3 "$WORK/loadgen.log"
check "loadgen exits 0: every order accepted and final (exit $LG_RC, ${LOADGEN_SECONDS}s)" test "$LG_RC" -eq 0
LG_SUMMARY="$(python3 - "$WORK/loadgen.json" <<'PY' 2>>"$WORK/checks.log" || true
import json, sys
d = json.load(open(sys.argv[1]))
print(d["sent"], d["accepted"], d["completed"], sum(d["errors"].values()),
      f'sent={d["sent"]} accepted={d["accepted"]} completed={d["completed"]} '
      f'final={d["final_states"]} errors={d["errors"]} accepted/s={d["accepted_per_s"]:.1f} '
      f'p99 acceptance={d["acceptance"]["p99_ms"]:.1f}ms '
      f'p99 end-to-end={(d.get("end_to_end") or {}).get("p99_ms", 0):.1f}ms')
PY
)"
if read -r LG_SENT LG_ACCEPTED LG_COMPLETED LG_ERRORS LG_TEXT <<<"$LG_SUMMARY" && [[ -n "$LG_TEXT" ]]; then
    echo "loadgen: $LG_TEXT"
    check "loadgen placed orders ($LG_SENT)" test "$LG_SENT" -gt 0
    check "loadgen: every order sent was accepted and completed ($LG_ACCEPTED accepted, $LG_COMPLETED completed of $LG_SENT, $LG_ERRORS errors)" \
        test "$LG_ACCEPTED" -eq "$LG_SENT" -a "$LG_COMPLETED" -eq "$LG_ACCEPTED" -a "$LG_ERRORS" -eq 0
else
    cat "$WORK/loadgen.json" "$WORK/loadgen.log" | tail -n 20
    fail "loadgen printed its JSON summary"
fi

###########################################################################
say "5. orders under failures: $ORDERS orders, one NATS node, the Redis master and one order-service replica stopped mid-load"
SINK_PORT="$(compose port webhook-sink 9000 | sed 's/.*://')"
# The NATS node that leads the order-commands stream, so that stopping it
# forces a leader election mid-load (nats-1 if that cannot be read).
LEADER="$(docker exec "$(service_containers nats-0)" wget -qO- 'http://127.0.0.1:8222/jsz?accounts=true&streams=true' \
    | python3 -c '
import json, sys
d = json.load(sys.stdin)
for a in d.get("account_details") or []:
    for st in a.get("stream_detail") or []:
        if st.get("name") == "CATGA_ORDER_COMMANDS":
            print((st.get("cluster") or {}).get("leader") or "")
' 2>/dev/null || true)"
[[ "$LEADER" =~ ^nats-[012]$ ]] || LEADER=nats-1
REDIS_VICTIM_NAME="$(sentinel_master)"
[[ "$REDIS_VICTIM_NAME" =~ ^redis-[012]$ ]] || REDIS_VICTIM_NAME=redis-0
REDIS_VICTIM="$(service_containers "$REDIS_VICTIM_NAME")"
echo "stopping $LEADER (leader of CATGA_ORDER_COMMANDS) at 30%, the Redis master $REDIS_VICTIM_NAME at 45% and one order-service replica at 60%"
NATS_VICTIM="$(service_containers "$LEADER")"
OS_VICTIM="$(service_containers order-service | tail -n1)"
python3 "$HERE/load.py" --api "$API" --sink "http://127.0.0.1:$SINK_PORT" \
    --orders "$ORDERS" --out "$WORK/summary.json" \
    --disrupt "0.3:docker stop -t 10 $NATS_VICTIM" \
    --disrupt "0.45:docker stop -t 10 $REDIS_VICTIM" \
    --disrupt "0.6:docker stop -t 30 $OS_VICTIM" || fail "load.py ran"
# What the Sentinels did (detection, election, promotion), to read against
# the refusal spans load.py printed; their whole recent log when an outage
# took long (20 s or more), to find out why.
LONGEST_REFUSAL="$(python3 -c "import json; print(int(json.load(open('$WORK/summary.json')).get('longest_refusal_seconds', 0)))" 2>/dev/null || echo 0)"
for n in 0 1 2; do
    if ((LONGEST_REFUSAL >= 20)); then
        docker logs --tail 60 "$(service_containers redis-sentinel-$n)" 2>&1 | sed "s/^/  redis-sentinel-$n: /" || true
    else
        docker logs "$(service_containers redis-sentinel-$n)" 2>&1 \
            | grep -E '[+-](sdown|odown|try-failover|elected-leader|failover-abort[a-z-]*|switch-master|failover-end) ' \
            | tail -n 8 | sed "s/^/  redis-sentinel-$n: /" || true
    fi
done
if [[ -s "$WORK/summary.json" ]]; then
    S="$WORK/summary.json"
    jq_() { python3 -c "import json,sys; print(json.load(open('$S'))$1)"; }
    ACCEPTED=$(jq_ '["accepted"]'); CONFIRMED=$(jq_ '["confirmed"]'); REJECTED=$(jq_ '["rejected"]')
    NOT_FINAL=$(jq_ '["not_final"].__len__()'); NOTIFIED=$(jq_ '["notified"]')
    MISSING_N=$(jq_ '["missing_notifications"].__len__()'); DISTINCT=$(jq_ '["distinct_accepted"]')
    GAVE_UP=$(jq_ '["gave_up"]'); DUP_POSTS=$(jq_ '["duplicate_webhook_posts"]')
    check "orders were accepted (${ACCEPTED} of $ORDERS)" test "$ACCEPTED" -ge $((ORDERS * 9 / 10))
    check "every order was accepted in the end, retries included (gave up: $GAVE_UP)" test "$GAVE_UP" -eq 0
    check "no accepted order id twice ($DISTINCT distinct)" test "$DISTINCT" -eq "$ACCEPTED"
    check "no accepted order lost: $CONFIRMED confirmed + $REJECTED rejected of $ACCEPTED, $NOT_FINAL not final" \
        test "$NOT_FINAL" -eq 0 -a $((CONFIRMED + REJECTED)) -eq "$ACCEPTED"
    check "every final order notified ($NOTIFIED, missing $MISSING_N)" test "$MISSING_N" -eq 0 -a "$NOTIFIED" -eq $((CONFIRMED + REJECTED))
    check "no order's notification posted twice ($DUP_POSTS)" test "$DUP_POSTS" -eq 0
else
    fail "load summary written"
fi
PROMOTED="$(sentinel_master)"
check "Sentinel promoted another Redis node ($REDIS_VICTIM_NAME -> ${PROMOTED:-none})" \
    bash -c "[[ '$PROMOTED' =~ ^redis-[012]$ && '$PROMOTED' != '$REDIS_VICTIM_NAME' ]]"
check "the stopped NATS node, Redis master and order-service replica start again" \
    docker start "$NATS_VICTIM" "$REDIS_VICTIM" "$OS_VICTIM"
rejoined_as_replica() {  # the old master follows the promoted node (start.sh asked the Sentinels)
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        docker exec "$REDIS_VICTIM" sh -c 'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning info replication' \
            | tr -d '\r' | grep -q "^master_host:$PROMOTED\.redis$" && return 0
        sleep 1
    done
    return 1
}
check "the old Redis master came back as a replica of $PROMOTED" rejoined_as_replica

# A master killed and started again at once, before the Sentinels notice: its
# start script sees them still naming it master, waits (not listening) for
# them to promote a replica, and follows it instead of resuming as master.
FAST_NAME="$(sentinel_master)"
FAST="$(service_containers "$FAST_NAME")"
echo "killing the Redis master $FAST_NAME and starting it again at once"
docker kill "$FAST" >/dev/null 2>&1 || true
docker start "$FAST" >/dev/null 2>&1 || true
follows_a_promoted_node() {
    local deadline=$((SECONDS + 90)) now
    while ((SECONDS < deadline)); do
        now="$(sentinel_master)"
        if [[ "$now" =~ ^redis-[012]$ && "$now" != "$FAST_NAME" ]] \
            && docker exec "$FAST" sh -c 'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning info replication' \
                | tr -d '\r' | grep -q "^master_host:$now\.redis$"; then
            echo "$FAST_NAME follows $now"
            return 0
        fi
        sleep 1
    done
    docker logs "$FAST" 2>&1 | grep -m3 'starting as' || true
    return 1
}
check "a master restarted at once waits for the promotion and follows it ($FAST_NAME)" follows_a_promoted_node
check "the stack is healthy again after the restarts" all_healthy 90
check "the NATS node rejoined the cluster" nats_cluster_ok

###########################################################################
say "6. teardown"
teardown
check "no container of $PROJECT left" test -z "$(project_containers)"
check "no network of $PROJECT left" test -z "$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")"
check "no volume of $PROJECT left" test -z "$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")"
check "no stand-alone test container left" test -z "$(docker ps -aq --filter "name=$PROJECT-")"

###########################################################################
TOTAL_SECONDS=$(( $(date +%s) - START_TS ))
say "summary"
printf 'images (MB): order-api %s, order-service %s, notification-service %s, loadgen %s\n' \
    "${SIZE_MB[order-api]:-?}" "${SIZE_MB[order-service]:-?}" "${SIZE_MB[notification-service]:-?}" "${SIZE_MB[loadgen]:-?}"
printf 'start-to-ready (ms, best of 3): order-api %s, order-service %s, notification-service %s\n' \
    "${READY_MS[order-api]:-?}" "${READY_MS[order-service]:-?}" "${READY_MS[notification-service]:-?}"
printf 'build (s): order-api %s, order-service %s, notification-service %s, loadgen %s; stand-ins %ss; stack up %ss\n' \
    "${BUILD_SECONDS[order-api]:-?}" "${BUILD_SECONDS[order-service]:-?}" "${BUILD_SECONDS[notification-service]:-?}" \
    "${BUILD_SECONDS[loadgen]:-?}" "$STANDIN_SECONDS" "${UP_SECONDS:-?}"
[[ -n "${LG_TEXT:-}" ]] && printf 'loadgen (%ss): %s\n' "${LOADGEN_SECONDS:-?}" "$LG_TEXT"
[[ -s "$WORK/summary.json" ]] && printf 'orders: %s\n' "$(python3 -c "import json; d=json.load(open('$WORK/summary.json')); print(', '.join(f'{k}={d[k]}' for k in ('orders_sent','accepted','confirmed','rejected','notified','duplicate_webhook_posts','retried_then_accepted','settle_seconds','responses')))")"
for f in "${FAILURES[@]}"; do printf 'failed: %s\n' "$f"; done
printf 'total time: %ss\n' "$TOTAL_SECONDS"
FINISHED=1
printf 'docker: %s passed, %s failed\n' "$PASSED" "$FAILED"
((FAILED == 0))
