# Prints "host port" of the current master: what the first Sentinel that
# answers names, else a node that says it is master (the Sentinels are all
# away). Fails when nobody knows one: the first boot of the whole set.
# Sourced by start.sh and sentinel.sh. Names: the pods' stable DNS names in
# Kubernetes (redis-N.redis, redis-sentinel-N.redis-sentinel), network
# aliases in Compose.
sentinel_master() {
  for i in 0 1 2; do
    reply="$(REDISCLI_AUTH="$REDIS_SENTINEL_PASSWORD" timeout 3 redis-cli --raw \
      -h "redis-sentinel-$i.redis-sentinel" -p 26379 \
      sentinel get-master-addr-by-name mymaster 2>/dev/null)" || continue
    # shellcheck disable=SC2086
    set -- $reply
    if [ $# -eq 2 ] && [ -n "$1" ] && [ "$2" -gt 0 ] 2>/dev/null; then
      echo "$1 $2"
      return 0
    fi
  done
  return 1
}
node_master() {
  for i in 0 1 2; do
    node="redis-$i.redis"
    [ "$node" = "${1:-}" ] && continue
    role="$(REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli --raw -h "$node" role 2>/dev/null | head -n 1)" || continue
    if [ "$role" = master ]; then
      echo "$node 6379"
      return 0
    fi
  done
  return 1
}
# How many replicas the Sentinels know for the master (0 if none answers).
sentinel_known_replicas() {
  for i in 0 1 2; do
    count="$(REDISCLI_AUTH="$REDIS_SENTINEL_PASSWORD" timeout 3 redis-cli --raw \
      -h "redis-sentinel-$i.redis-sentinel" -p 26379 sentinel master mymaster 2>/dev/null \
      | awk 'previous == "num-slaves" { print; exit } { previous = $0 }')" || continue
    if [ -n "$count" ]; then
      echo "$count"
      return 0
    fi
  done
  echo 0
}
