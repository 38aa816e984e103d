#!/usr/bin/env bash
# Creates Secret catga-secrets in namespace catga-cluster with fresh random
# values. The repository never holds a real secret: this is its only source.
#
#   k8s/tools/create-secrets.sh            create it (namespace too) unless it exists
#   k8s/tools/create-secrets.sh --rotate   replace it (then: kubectl rollout restart ...)
#   k8s/tools/create-secrets.sh --print    print the manifest instead (to seal or encrypt it)
#
# Keys: redis-password (REDIS_PASSWORD of Redis and the services),
# redis-sentinel-password (the Sentinels' requirepass; REDIS_SENTINEL_PASSWORD
# of Redis, the Sentinels and the services), jwt-secret
# (Auth__JwtSecret of order-api, >= 32 characters), grafana-admin-password,
# and one NATS password per user of docker/nats/auth.conf (NATS__Password of
# that service, $NATS_<USER>_PASSWORD of nats-server): nats-operator-password
# (the operator step only), nats-order-api-password, nats-order-service-password,
# nats-notification-service-password.
# Values may be given instead of generated: REDIS_PASSWORD=...
# REDIS_SENTINEL_PASSWORD=... JWT_SECRET=...
# GRAFANA_ADMIN_PASSWORD=... (hex or other characters without quotes or spaces),
# NATS_OPERATOR_PASSWORD=... NATS_ORDER_API_PASSWORD=... NATS_ORDER_SERVICE_PASSWORD=...
# NATS_NOTIFICATION_SERVICE_PASSWORD=... (a letter first, then only letters, digits,
# '-' or '_': nats-server reads them as configuration values).
# Webhooks, only when given (nothing is generated for them):
#   ALERT_WEBHOOK_URL=https://...         -> alertmanager-webhook-url: where
#       Alertmanager posts alerts (Alertmanager does not start without it);
#   NOTIFICATION_WEBHOOK_URL=https://...  -> notification-webhook-url:
#       notification-service's Notification__WebhookUrl (log lines without it).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mode="${1:-create}"
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

redis_password="${REDIS_PASSWORD:-$(random_hex 24)}"
redis_sentinel_password="${REDIS_SENTINEL_PASSWORD:-$(random_hex 24)}"
jwt_secret="${JWT_SECRET:-$(random_hex 32)}"
grafana_password="${GRAFANA_ADMIN_PASSWORD:-$(random_hex 12)}"
# A letter first: nats-server would read an all-digit value as a number.
nats_operator_password="${NATS_OPERATOR_PASSWORD:-n$(random_hex 24)}"
nats_order_api_password="${NATS_ORDER_API_PASSWORD:-n$(random_hex 24)}"
nats_order_service_password="${NATS_ORDER_SERVICE_PASSWORD:-n$(random_hex 24)}"
nats_notification_service_password="${NATS_NOTIFICATION_SERVICE_PASSWORD:-n$(random_hex 24)}"
for nats_password in "$nats_operator_password" "$nats_order_api_password" \
  "$nats_order_service_password" "$nats_notification_service_password"; do
  if [[ ! "$nats_password" =~ ^[A-Za-z][A-Za-z0-9_-]*$ ]]; then
    echo "create-secrets.sh: a NATS password must start with a letter and hold only letters, digits, '-' and '_'" >&2
    exit 2
  fi
done
if ((${#jwt_secret} < 32)); then
  echo "create-secrets.sh: JWT_SECRET must be at least 32 characters" >&2
  exit 2
fi

webhooks=()
if [[ -n "${ALERT_WEBHOOK_URL:-}" ]]; then
  webhooks+=(--from-literal=alertmanager-webhook-url="$ALERT_WEBHOOK_URL")
else
  echo "create-secrets.sh: ALERT_WEBHOOK_URL is not set: Alertmanager will not start until the Secret has alertmanager-webhook-url" >&2
fi
if [[ -n "${NOTIFICATION_WEBHOOK_URL:-}" ]]; then
  webhooks+=(--from-literal=notification-webhook-url="$NOTIFICATION_WEBHOOK_URL")
fi

manifest() {
  kubectl create secret generic catga-secrets --namespace catga-cluster \
    --from-literal=redis-password="$redis_password" \
    --from-literal=redis-sentinel-password="$redis_sentinel_password" \
    --from-literal=jwt-secret="$jwt_secret" \
    --from-literal=grafana-admin-password="$grafana_password" \
    --from-literal=nats-operator-password="$nats_operator_password" \
    --from-literal=nats-order-api-password="$nats_order_api_password" \
    --from-literal=nats-order-service-password="$nats_order_service_password" \
    --from-literal=nats-notification-service-password="$nats_notification_service_password" \
    "${webhooks[@]}" \
    --dry-run=client -o yaml | sed '/^  creationTimestamp: null$/d'
}

case "$mode" in
  --print)
    manifest
    ;;
  --rotate)
    kubectl apply -f "$here/../00-namespace.yml"
    manifest | kubectl apply -f -
    echo "rotated; restart the workloads: kubectl rollout restart statefulset/redis statefulset/redis-sentinel statefulset/nats deployment -n catga-cluster"
    ;;
  create)
    kubectl apply -f "$here/../00-namespace.yml"
    if kubectl get secret catga-secrets --namespace catga-cluster >/dev/null 2>&1; then
      echo "catga-secrets exists; left as is (use --rotate to replace it)"
    else
      manifest | kubectl create -f -
      echo "created catga-secrets (Grafana admin password: kubectl get secret catga-secrets -n catga-cluster -o jsonpath='{.data.grafana-admin-password}' | base64 -d)"
    fi
    ;;
  *)
    echo "usage: $0 [--print|--rotate]" >&2
    exit 2
    ;;
esac
