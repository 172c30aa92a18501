#!/usr/bin/env bash
# bench-checkpoints.sh: what the run ledger's checkpoints cost. The producer
# of commit BASE (A) and of the working tree (B) publish the same generated
# file to the same broker alternately, A B A B, each run to a topic and a
# ledger topic of its own, with the ledger's default settings; the report
# gives, per variant, the median wall time and the ledger records one run
# wrote (started, checkpoints, final).
#
# Usage: KAFKA_BROKERS=HOST:PORT bash hack/bench-checkpoints.sh BASE
# Environment: ROUNDS=5, LINES=10000000, DIR=.bench/checkpoints,
# PRODUCER_FLAGS (extra flags for both variants).
set -euo pipefail

ROOT=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
die() { printf 'bench-checkpoints: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'bench-checkpoints: %s\n' "$*" >&2; }

BASE=${1:?usage: KAFKA_BROKERS=HOST:PORT bash hack/bench-checkpoints.sh BASE}
BROKERS=${KAFKA_BROKERS:?set KAFKA_BROKERS to a broker that allows topic creation}
ROUNDS=${ROUNDS:-5}
LINES=${LINES:-10000000}
DIR=${DIR:-.bench/checkpoints}
read -r -a EXTRA <<<"${PRODUCER_FLAGS:-}"
mkdir -p "$DIR/a" "$DIR/b" "$DIR/logs"

log "building A ($BASE) and B (working tree)"
rm -rf "$DIR/a/src" && mkdir -p "$DIR/a/src"
git archive "$BASE" | tar -x -C "$DIR/a/src"
(cd "$DIR/a/src" && go build -o ../coupon-producer ./cmd/coupon-producer)
go build -o "$DIR/b/coupon-producer" ./cmd/coupon-producer
go build -o "$DIR/topiccount" ./cmd/topiccount

FILE="$DIR/couponbase1-${LINES}.gz"
if [[ ! -s "$FILE" ]]; then
  log "generating $FILE ($LINES lines)"
  go run ./cmd/coupongen -dir "$DIR/gen" -files 1 -lines "$LINES" -force
  mv "$DIR/gen/couponbase1.gz" "$FILE"
fi

# run VARIANT ROUND: one timed run; appends "variant seconds records" to
# the results.
run() {
  local v=$1 i=$2 topic runs start end
  topic="bench-ckpt-$v-$i-$$" runs="bench-ckpt-runs-$v-$i-$$"
  start=$(date +%s.%N)
  KAFKA_BROKERS=$BROKERS LOG_FORMAT=json "$DIR/$v/coupon-producer" --topic "$topic" \
    --ledger-topic "$runs" ${EXTRA[@]+"${EXTRA[@]}"} "$FILE" 2>"$DIR/logs/$v-$i.log" ||
    die "variant $v round $i failed: see $DIR/logs/$v-$i.log"
  end=$(date +%s.%N)
  local n
  n=$("$DIR/topiccount" --brokers "$BROKERS" "$runs" | cut -f2)
  awk -v v="$v" -v s="$start" -v e="$end" -v n="$n" 'BEGIN { printf "%s %.3f %s\n", v, e - s, n }' | tee -a "$DIR/results"
}

: >"$DIR/results"
for i in $(seq 1 "$ROUNDS"); do
  run a "$i"
  run b "$i"
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for v in a b; do
  t=$(awk -v v="$v" '$1 == v { print $2 }' "$DIR/results" | median)
  r=$(awk -v v="$v" '$1 == v { print $3 }' "$DIR/results" | median)
  printf '%s: median wall %s s, median ledger records per run %s (%s rounds)\n' \
    "$([[ $v == a ]] && echo "A $BASE" || echo "B working tree")" "$t" "$r" "$ROUNDS"
done
