#!/bin/sh
# Writes the Sentinel's configuration into the emptyDir and starts it,
# monitoring the current master.
set -eu
. /etc/redis/find-master.sh
# The configuration Sentinel rewrites: an emptyDir in Kubernetes, the
# container's volume in Compose (REDIS_RUN_DIR, as for start.sh).
run_dir="${REDIS_RUN_DIR:-/run/sentinel}"
conf="$run_dir/sentinel.conf"
# The master: what the other Sentinels or the nodes say, else (first
# boot of the set) redis-0. Wait up to 2 minutes for it to answer: a
# Sentinel refuses a master whose name does not resolve yet.
deadline=$(($(date +%s) + 120))
while :; do
  master="$(sentinel_master || node_master || echo "redis-0.redis 6379")"
  if REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli -h "${master% *}" -p "${master#* }" ping >/dev/null 2>&1 \
    || [ "$(date +%s)" -ge "$deadline" ]; then
    break
  fi
  sleep 2
done
echo "monitoring mymaster at $master"
{
  echo "dir $run_dir"
  echo "sentinel announce-ip $HOSTNAME.redis-sentinel"
  echo "requirepass \"$REDIS_SENTINEL_PASSWORD\""
  echo "sentinel sentinel-pass \"$REDIS_SENTINEL_PASSWORD\""
  # resolve-hostnames (in sentinel.conf) before monitor, and the
  # master's own options after it.
  cat /etc/redis/sentinel.conf
  echo "sentinel monitor mymaster $master 2"
  echo "sentinel auth-pass mymaster \"$REDIS_PASSWORD\""
  # down-after-milliseconds 5000: a master silent for 5 s is down. Writes
  #   wait (503 + Retry-After) from a crash until the promotion, so this
  #   is most of the outage; 5 s is well above the pauses a healthy Redis
  #   makes (fork for an AOF rewrite of 256 MB, CPU throttled at its limit).
  # failover-timeout 10000: how long one promotion may take before another
  #   Sentinel tries again (after twice this), and how long the replicas
  #   get to follow the new master in parallel-syncs order (they follow
  #   later anyway); a full resync of 256 MB takes seconds. An election that
  #   splits thus costs 20 s more, not the minute of a 30 s timeout.
  # parallel-syncs 1: one replica resyncs at a time; the other keeps
  #   serving and stays a candidate.
  echo "sentinel down-after-milliseconds mymaster 5000"
  echo "sentinel failover-timeout mymaster 10000"
  echo "sentinel parallel-syncs mymaster 1"
} > "$conf"
exec redis-server "$conf" --sentinel
