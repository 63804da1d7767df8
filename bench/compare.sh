#!/usr/bin/env bash
# The headline table: the Node.js reference stack and `nursery cluster up` side by side, through
# their proxies, with the same load generator (../shared/peers/compare.sh, which prints per rate
# the medians over rounds and the ratios). Keeps every run's JSON and the table in
# bench/results/<date>/compare-U<users>x<devices>/.
#
#   bench/compare.sh                                   # U=100 D=3, rates 100..500, 3 rounds
#   U=1000 RATES=100,200,300,400 bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
peers=${PEERS:-../shared/peers}
[ -x "$peers/compare.sh" ] || { echo "no $peers/compare.sh (set PEERS to the peers' directory)" >&2; exit 1; }
export U=${U:-100} D=${D:-3} RATES=${RATES:-100,200,300,400,500} ROUNDS=${ROUNDS:-3} S=${S:-15}
export OUT=${OUT:-bench/results/$(date -u +%F)/compare-U${U}x${D}}
mkdir -p "$OUT"
scripts/bootstrap test >/dev/null
"$peers/compare.sh" | tee "$OUT/compare.out" | sed -n '/^fan-out through/,$p'
