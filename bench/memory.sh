#!/usr/bin/env bash
# Server RSS per idle websocket, for both kinds of client (one that offers permessage-deflate,
# as every browser does, and one that does not), each socket given one change before RSS is
# read: 18,000 sockets straight to 3 local instances (bench/connections.py's own cluster) and
# 9,000 through Caddy (`nursery cluster up`, fresh for each run: freed memory is reused).
#
#   bench/memory.sh            # ROUNDS=3 DIRECT=18000 PROXIED=9000
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} DIRECT=${DIRECT:-18000} PROXIED=${PROXIED:-9000}
out=${OUT:-bench/results/$(date -u +%F)/memory}
mkdir -p "$out"
py=.venv/bin/python
ulimit -n "$(ulimit -Hn)"
for round in $(seq "$ROUNDS"); do
  for kind in plain deflate; do
    flag=$([ "$kind" = deflate ] && echo --deflate || true)
    echo "round $round: $DIRECT direct, $kind" >&2
    $py bench/connections.py --connections "$DIRECT" --procs 2 --deliver $flag \
      >"$out/direct-$DIRECT-$kind-run$round.json"
    echo "round $round: $PROXIED through Caddy, $kind" >&2
    dir=$(mktemp -d /tmp/nursery-memory.XXXX)
    .venv/bin/nursery cluster up --detach --dir "$dir" >"$dir/up.log" 2>&1
    args=$($py - "$dir" <<'PY'
import json, sys
state = json.load(open(f"{sys.argv[1]}/state.json"))
procs = {p["name"]: p for p in state["processes"]}
instances = [p for name, p in sorted(procs.items()) if name.startswith("instance-")]
print("--urls", ",".join(f"http://{p['host']}:{p['port']}" for p in instances),
      "--pids", ",".join(str(p["pid"]) for p in instances),
      "--via", f"http://{procs['caddy']['host']}:{procs['caddy']['port']}",
      "--proxy-pid", procs["caddy"]["pid"], "--database-url", state["database"]["url"],
      "--secret", open(f"{sys.argv[1]}/secret_key").read().strip())
PY
)
    # shellcheck disable=SC2086
    $py bench/connections.py --connections "$PROXIED" --procs 2 --deliver $flag $args \
      >"$out/caddy-$PROXIED-$kind-run$round.json" || true
    .venv/bin/nursery cluster down --dir "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
  done
done
for f in "$out"/direct-*-plain-run1.json "$out"/direct-*-deflate-run1.json "$out"/caddy-*-plain-run1.json "$out"/caddy-*-deflate-run1.json; do
  $py bench/median.py "${f%-run1.json}"-run*.json
done
