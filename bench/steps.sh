#!/usr/bin/env bash
# CPU per write before and after each step of the performance work: the same direct fan-out
# load (bench/fanout.py: U=100 x D=3, local instances, PostgreSQL and Redis) on instances run
# from each commit's tree, the commits interleaved in each round. Prints, per commit and rate,
# the medians over rounds of the instances' CPU per write and of p50/p99.
#
#   bench/steps.sh 84f7b96 dcfda7f a14918f 823071f 49357de HEAD
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} RATES=${RATES:-100,200} S=${S:-10}
out=${OUT:-bench/results/$(date -u +%F)/steps}
mkdir -p "$out"
trees=$(mktemp -d /tmp/nursery-steps.XXXX)
cleanup() { for c in "$@"; do git worktree remove -f "$trees/$c" 2>/dev/null || true; done; rm -rf "$trees"; }
trap 'cleanup "$@"' EXIT
for commit in "$@"; do git worktree add -f --detach "$trees/$commit" "$commit" -q; done
for round in $(seq "$ROUNDS"); do
  for commit in "$@"; do
    echo "round $round: $commit" >&2
    .venv/bin/python bench/fanout.py --server-source "$trees/$commit" --users 100 --devices 3 \
      --rates "$RATES" --seconds "$S" >"$out/$commit-run$round.json"
  done
done
.venv/bin/python - "$out" "$@" <<'PY'
import glob, json, statistics, subprocess, sys
out, commits = sys.argv[1], sys.argv[2:]
print("| commit | writes/s | instances' CPU ms / write | p50 ms | p99 ms | delivered |")
print("|---|---|---|---|---|---|")
for commit in commits:
    title = subprocess.run(["git", "log", "-1", "--format=%h %s", commit], capture_output=True, text=True).stdout.strip()[:60]
    runs = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/{commit}-run*.json"))]
    for rate in sorted({lv["rate"] for r in runs for lv in r["levels"]}):
        levels = [lv for r in runs for lv in r["levels"] if lv["rate"] == rate]
        med = lambda get: statistics.median(get(lv) for lv in levels)
        print(f"| {title} | {rate:g} | {med(lambda lv: lv['server_cpu_ms_per_write']):.2f} "
              f"| {med(lambda lv: lv['latency_ms']['p50']):.1f} | {med(lambda lv: lv['latency_ms']['p99']):.1f} "
              f"| {min(lv['delivered_ratio'] for lv in levels) * 100:.2f} % |")
PY
