#!/usr/bin/env python3
"""Places orders through order-api while containers are stopped, then checks
that every accepted order reached a final status and was notified.

usage: load.py --api URL --sink URL [--orders N] [--concurrency C]
               [--disrupt FRACTION:COMMAND]... --out summary.json

A logical order is one Idempotency-Key: it is retried (same key, same body)
until order-api answers 202 or the attempts run out. Only orders answered 202
count as accepted; each must end Confirmed or Rejected and be notified once
(the webhook receiver sees Idempotency-Key "<orderId>:<status>").
Commands in --disrupt run (through the shell) when that fraction of the orders
has been sent. order-api authenticates: each order is placed with an HS256
token for its customer, and read back with an admin token, both signed with
AUTH_JWT_SECRET (the secret docker/compose.yaml gives order-api). Stdlib only.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

FINAL = {"Confirmed", "Rejected", "Cancelled"}
# docker/compose.yaml's default for AUTH_JWT_SECRET.
JWT_SECRET = os.environ.get("AUTH_JWT_SECRET", "local-development-only-jwt-secret-0123456789")


def bearer(sub, role=None):
    """`Bearer <HS256 JWT>` for `sub`, valid for an hour (what `order-api token` mints)."""
    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    claims = {"sub": sub, "exp": int(time.time()) + 3600}
    if role:
        claims["role"] = role
    message = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(JWT_SECRET.encode(), message.encode(), hashlib.sha256).digest()
    return f"Bearer {message}.{b64(signature)}"


ADMIN = bearer("load-admin", "admin")


def http(method, url, body=None, headers=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except Exception as err:  # connection refused/reset, timeout
        return 0, str(err).encode()


# How long one order is retried. A Redis failover answers 503 from the crash
# to the promotion: usually 5-10 s. When the Sentinels' first election
# splits, the next starts only after twice failover-timeout (10 s, in
# docker/redis/sentinel.sh); before Compose's x-redis-hosts, Sentinels stalled
# on DNS went into TILT mode for minutes (docs/kubernetes.md). What each
# outage cost is printed (the refusal spans) and recorded
# ("longest_refusal_seconds"), so a slow one shows without failing the run;
# the budget is only there to end a run that never recovers.
RETRY_SECONDS = 150.0


def problem_kind(status, raw):
    """`503 unavailable: the order store is unavailable...` for the timeline."""
    try:
        problem = json.loads(raw)
        return f"{status} {problem.get('type', '').rsplit('/', 1)[-1]}: {problem.get('detail', '')[:48]}"
    except (ValueError, AttributeError):
        return f"{status} {raw[:48]!r}"


def place(api, index, stats, lock):
    key = f"it-{uuid.uuid4()}"
    customer = f"c-{index % 17}"
    body = {"customerId": customer, "items": [{"productId": "PROD-001", "quantity": 1}]}
    headers = {"Idempotency-Key": key, "Authorization": bearer(customer)}
    deadline = time.monotonic() + RETRY_SECONDS
    attempt = 0
    while True:
        status, raw = http("POST", f"{api}/api/orders", body, headers)
        with lock:
            stats["responses"][str(status)] = stats["responses"].get(str(status), 0) + 1
            if status != 202:
                stats["refusals"].append((time.monotonic(), problem_kind(status, raw)))
        if status == 202:
            order_id = json.loads(raw)["orderId"]
            with lock:
                stats["retried_then_accepted"] += 1 if attempt else 0
            return order_id
        if status in (400, 422):
            with lock:
                stats["refused"] += 1
            return None
        if time.monotonic() >= deadline:
            break
        time.sleep(min(0.25 * (attempt + 1), 2.0))
        attempt += 1
    with lock:
        stats["gave_up"] += 1
    return None


def print_outages(t0, disrupted_at, refusals):
    """The spans (gaps under 3 s) in which orders were refused, and why,
    against the moments the disruptions started: what each outage cost.
    Returns the longest span in seconds."""
    for at, command in disrupted_at:
        print(f"[load] {at:6.1f}s  disruption: {command}", file=sys.stderr)
    spans = []
    for at, kind in sorted(refusals):
        if spans and at - spans[-1]["end"] < 3.0:
            spans[-1]["end"] = at
            spans[-1]["kinds"][kind] = spans[-1]["kinds"].get(kind, 0) + 1
        else:
            spans.append({"start": at, "end": at, "kinds": {kind: 1}})
    for span in spans:
        print(f"[load] {span['start'] - t0:6.1f}s-{span['end'] - t0:.1f}s  refused for "
              f"{span['end'] - span['start']:.1f}s: {span['kinds']}", file=sys.stderr)
    sys.stderr.flush()
    return max((span["end"] - span["start"] for span in spans), default=0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--sink", required=True)
    ap.add_argument("--orders", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=6)
    ap.add_argument("--rate", type=float, default=25.0, help="orders started per second")
    ap.add_argument("--disrupt", action="append", default=[])
    ap.add_argument("--settle-timeout", type=float, default=150.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    disruptions = []
    for spec in args.disrupt:
        fraction, command = spec.split(":", 1)
        disruptions.append([float(fraction), command, False])

    lock = threading.Lock()
    stats = {"responses": {}, "refused": 0, "gave_up": 0, "retried_then_accepted": 0, "refusals": []}
    accepted = []
    t0 = time.monotonic()
    disrupted_at = []
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        futures = []
        for i in range(args.orders):
            for d in disruptions:
                if not d[2] and i >= d[0] * args.orders:
                    d[2] = True
                    disrupted_at.append((time.monotonic() - t0, d[1]))
                    rc = subprocess.run(d[1], shell=True, capture_output=True, text=True)
                    print(f"[load] at order {i}: {d[1]!r} -> exit {rc.returncode} {rc.stdout.strip()} {rc.stderr.strip()}",
                          file=sys.stderr, flush=True)
            futures.append(pool.submit(place, args.api, i, stats, lock))
            time.sleep(1.0 / args.rate)
        for f in futures:
            order_id = f.result()
            if order_id:
                accepted.append(order_id)
    load_seconds = time.monotonic() - t0
    longest_refusal = print_outages(t0, disrupted_at, stats["refusals"])
    print(f"[load] sent {args.orders} orders in {load_seconds:.1f}s, {len(accepted)} accepted; "
          f"responses {stats['responses']}", file=sys.stderr, flush=True)

    # Every accepted order must reach a final status...
    pending = set(accepted)
    final = {}
    deadline = time.monotonic() + args.settle_timeout
    while pending and time.monotonic() < deadline:
        for order_id in list(pending):
            status, raw = http("GET", f"{args.api}/api/orders/{order_id}", headers={"Authorization": ADMIN})
            if status == 200:
                s = json.loads(raw).get("status")
                if s in FINAL:
                    final[order_id] = s
                    pending.discard(order_id)
        if pending:
            time.sleep(1.0)
    settle_seconds = time.monotonic() - t0 - load_seconds

    # ... and be notified (allowing the notifier the same deadline).
    expected = {f"{oid}:{s}" for oid, s in final.items()}
    keys = {}
    while True:
        status, raw = http("GET", f"{args.sink}/stats")
        keys = json.loads(raw)["keys"] if status == 200 else {}
        if expected <= set(keys) or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    missing_notifications = sorted(expected - set(keys))
    summary = {
        "orders_sent": args.orders,
        "accepted": len(accepted),
        "distinct_accepted": len(set(accepted)),
        "confirmed": sum(1 for s in final.values() if s == "Confirmed"),
        "rejected": sum(1 for s in final.values() if s == "Rejected"),
        "not_final": sorted(pending),
        "notified": len(expected & set(keys)),
        "missing_notifications": missing_notifications,
        "duplicate_webhook_posts": sum(c - 1 for c in keys.values() if c > 1),
        "responses": stats["responses"],
        "refused": stats["refused"],
        "gave_up": stats["gave_up"],
        "retried_then_accepted": stats["retried_then_accepted"],
        "longest_refusal_seconds": round(longest_refusal, 1),
        "load_seconds": round(load_seconds, 1),
        "settle_seconds": round(settle_seconds, 1),
    }
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("not_final", "missing_notifications")}),
          file=sys.stderr)


if __name__ == "__main__":
    main()
