#!/bin/sh
# Builds the runtime configuration (the root filesystem is read-only) and
# starts Redis as the replica of the master the Sentinels name (or, with the
# Sentinels away, a node that is master). The ordinal decides only on the
# first boot of the whole set, when nobody knows a master: redis-0 is master.
set -eu
. /etc/redis/find-master.sh
me="$HOSTNAME.redis"
# The runtime configuration: an emptyDir in Kubernetes. Compose points
# REDIS_RUN_DIR at the container's volume (its tmpfs came back unwritable
# for the redis user after a restart).
conf="${REDIS_RUN_DIR:-/run/redis}/redis.conf"
cp /etc/redis/redis.conf "$conf"
{
  echo "requirepass \"$REDIS_PASSWORD\""
  echo "masterauth \"$REDIS_PASSWORD\""
  # Known to the master, and through it to the Sentinels, by the stable
  # DNS name (the pod IP changes with every restart).
  echo "replica-announce-ip $me"
} >> "$conf"
# This node restarted while the Sentinels still name it master (it died
# faster than down-after-milliseconds): its last second of AOF may be
# gone, while a replica holds every acknowledged write (WAIT). So it
# waits, not listening, for the Sentinels to promote that replica, and
# follows it; it resumes as master only if they know no replica, or
# have not promoted one within 30 s.
deadline=$(($(date +%s) + 30))
while :; do
  if master="$(sentinel_master)"; then
    if [ "${master% *}" != "$me" ]; then
      role="replicaof $master"
    elif [ "$(sentinel_known_replicas)" -gt 0 ] && [ "$(date +%s)" -lt "$deadline" ]; then
      sleep 2
      continue
    else
      role=master
    fi
  elif master="$(node_master "$me")"; then
    # No Sentinel answers, but a node is master: follow it, never a
    # second master.
    role="replicaof $master"
  elif [ "${HOSTNAME##*-}" = 0 ]; then
    # First boot of the whole set: nobody knows a master.
    role=master
  else
    role="replicaof redis-0.redis 6379"
  fi
  break
done
echo "starting as ${role}"
if [ "$role" != master ]; then
  echo "$role" >> "$conf"
fi
exec redis-server "$conf"
