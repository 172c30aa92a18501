#!/usr/bin/env bash
# bench.sh: end-to-end benchmark of the coupon producer against a real Kafka
# broker, side by side with a peer pipeline built from standard tools:
#
#   A  bin/coupon-producer --brokers B --topic bench-producer-N FILE
#   B  igzip -dc FILE | kcat -P -b B -t bench-kcat-N ...
#
# and of the producer's read path alone (--dry-run) against zcat. Runs of A
# and B (and of dry-run and zcat) alternate on the same file and broker, so
# that drift in the machine's load hits both alike; the report gives medians.
#
# Run from anywhere: `make bench` or `bash hack/bench.sh`. Settings come from
# the environment; see usage() below or docs/performance.md. The report is
# printed and written to .bench/report.md; logs of the last run are kept in
# .bench/last-run/.
set -euo pipefail

ROOT=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
cd "$ROOT"

# Absolute form of a path relative to the repository root.
abs() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "${ROOT}/$1" ;; esac; }

die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'bench: %s\n' "$*" >&2; }

usage() {
  cat <<'EOF'
Usage: bash hack/bench.sh        (or: make bench)

Environment:
  BENCH_ROUNDS=3          rounds; each round runs every selected part once
  BENCH_ONLY=LIST         comma-separated parts to run: producer, kcat, dryrun
                          (dryrun means --dry-run and zcat); default: all
  BENCH_FULL=1            bench the 100M-line file instead of the 10M-line one
  BENCH_LONGLINE=1        bench a file holding one 40 MB line of codes
                          separated by spaces (kcat is skipped: it would make
                          the whole line one 40 MB record)
  BENCH_FILE=PATH         bench this gzip file instead of a generated one
  BENCH_WARMUP=1          untimed producer and kcat runs on a 1M-line file
                          first, so that round 1 does not meet a cold broker;
                          0 to skip
  BENCH_QUIET_WAIT=30     before each run, wait up to this many seconds for
                          the machine (broker aside) to be idle; 0: never wait
  BENCH_PARTITIONS=6      partitions of every bench topic (the producer's
                          default); passed to the producer as --partitions
  PRODUCER_FLAGS=...      extra producer flags, e.g. "--linger 50ms"
  KCAT_FLAGS=...          replaces kcat's tuning flags (default:
                          -z lz4 -X linger.ms=50 -X batch.num.messages=10000
                          -X queue.buffering.max.messages=1000000)
  KAFKA_BROKERS=HOST:PORT use this broker instead of starting a private one;
                          it must allow topic creation and deletion
  BENCH_KAFKA_PORT=19192  port of the private broker (controller: the next
                          port); its state lives in .bench/kafka
  BENCH_KEEP_BROKER=1     leave the private broker running at the end
  BENCH_REV=COMMIT        bench the producer of this commit (built from
                          `git archive` into .bench/bin) instead of the
                          working tree; figures stay reproducible while the
                          code is being edited
  BENCH_DIR=.bench        where generated files, logs and the report go
EOF
}

case "${1:-}" in
  -h | --help | help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; die "unexpected argument: $1 (settings come from the environment)" ;;
esac

# ---------------------------------------------------------------- settings --

BENCH_DIR=${BENCH_DIR:-.bench}
readonly BENCH_DIR
readonly DATA_DIR="${BENCH_DIR}/data"
readonly RUN_DIR="${BENCH_DIR}/last-run"
readonly REPORT="${BENCH_DIR}/report.md"
readonly KL=hack/kafka-local/kafka-local.sh
BIN=bin/coupon-producer

readonly ROUNDS=${BENCH_ROUNDS:-3}
readonly PARTITIONS=${BENCH_PARTITIONS:-6}
readonly WARMUP=${BENCH_WARMUP:-1}
readonly QUIET_WAIT=${BENCH_QUIET_WAIT:-30}
readonly PRODUCER_FLAGS=${PRODUCER_FLAGS:-}
readonly KCAT_FLAGS=${KCAT_FLAGS:--z lz4 -X linger.ms=50 -X batch.num.messages=10000 -X queue.buffering.max.messages=1000000}
read -r -a producer_flags <<<"$PRODUCER_FLAGS"
read -r -a kcat_flags <<<"$KCAT_FLAGS"

[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer (got '${ROUNDS}')"
[[ "$PARTITIONS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_PARTITIONS must be a positive integer (got '${PARTITIONS}')"
[[ "$WARMUP" == 0 || "$WARMUP" == 1 ]] || die "BENCH_WARMUP must be 0 or 1 (got '${WARMUP}')"
[[ "$QUIET_WAIT" =~ ^[0-9]+$ ]] || die "BENCH_QUIET_WAIT must be a number of seconds (got '${QUIET_WAIT}')"

# Which file, and what it is called in the report.
if [[ -n "${BENCH_FILE:-}" ]]; then
  [[ -f "$BENCH_FILE" ]] || die "BENCH_FILE ${BENCH_FILE} is not a file"
  FILE=$BENCH_FILE
  FILE_KIND="given file"
elif [[ "${BENCH_LONGLINE:-0}" == 1 ]]; then
  FILE="${DATA_DIR}/longline/couponbase-longline.gz"
  FILE_KIND="one 40 MB line of codes separated by spaces, no newline"
elif [[ "${BENCH_FULL:-0}" == 1 ]]; then
  FILE="${DATA_DIR}/100m/couponbase1.gz"
  FILE_KIND="coupongen -lines 100000000 -seed 1"
else
  FILE="${DATA_DIR}/10m/couponbase1.gz"
  FILE_KIND="coupongen -lines 10000000 -seed 1"
fi

# Parts to run.
declare -A PART=([producer]=1 [kcat]=1 [dryrun]=1)
if [[ -n "${BENCH_ONLY:-}" ]]; then
  PART=([producer]=0 [kcat]=0 [dryrun]=0)
  IFS=, read -r -a only <<<"$BENCH_ONLY"
  for p in "${only[@]}"; do
    [[ -n "${PART[$p]+x}" ]] || die "BENCH_ONLY: unknown part '${p}' (want producer, kcat and/or dryrun)"
    PART[$p]=1
  done
fi
NOTES=()
if [[ "${BENCH_LONGLINE:-0}" == 1 && -z "${BENCH_FILE:-}" && "${PART[kcat]}" == 1 ]]; then
  PART[kcat]=0
  NOTES+=("kcat skipped: it sends one record per line, and the file's one 40 MB line exceeds any record size limit.")
fi
NEED_KAFKA=0
[[ "${PART[producer]}" == 1 || "${PART[kcat]}" == 1 ]] && NEED_KAFKA=1
[[ "$NEED_KAFKA" == 1 || "${PART[dryrun]}" == 1 ]] || die "BENCH_ONLY selects nothing"

# ------------------------------------------------------------------- tools --

# Packages the runs need, installed with apt-get when running as root.
ensure_tools() {
  local -a pkgs=()
  command -v go >/dev/null 2>&1 || die "go not found: install Go (see go.mod for the version)"
  [[ -x /usr/bin/time ]] || pkgs+=(time)
  command -v igzip >/dev/null 2>&1 || pkgs+=(isal)
  command -v zcat >/dev/null 2>&1 || pkgs+=(gzip)
  if [[ "${PART[kcat]}" == 1 ]] && ! command -v kcat >/dev/null 2>&1; then
    pkgs+=(kcat)
  fi
  ((${#pkgs[@]} == 0)) && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${pkgs[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2
  else
    die "missing tools; install them with: sudo apt-get install -y ${pkgs[*]}"
  fi
}

# -------------------------------------------------------------- build, data --

# Builds the producer of the working tree into bin/, or with BENCH_REV the
# producer of that commit into .bench/bin/, with the flags of the container
# image (Dockerfile). Sets SOURCE for the report.
build_producer() {
  local src=. version rev
  if [[ -n "${BENCH_REV:-}" ]]; then
    rev=$(git rev-parse --short "${BENCH_REV}^{commit}" 2>/dev/null) || die "BENCH_REV ${BENCH_REV} is not a commit"
    src="${BENCH_DIR}/src/${rev}"
    if [[ ! -f "${src}/go.mod" ]]; then
      rm -rf -- "$src"
      mkdir -p "$src"
      git archive "$rev" | tar -x -C "$src"
    fi
    version="bench-${rev}"
    BIN="${BENCH_DIR}/bin/coupon-producer-${rev}"
    SOURCE="commit ${rev} (BENCH_REV=${BENCH_REV})"
  else
    rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    version="bench-${rev}"
    SOURCE="working tree at ${rev}"
    if [[ -n "$(git status --porcelain -- go.mod go.sum cmd pkg 2>/dev/null)" ]]; then
      version+="-dirty"
      SOURCE+=" with uncommitted changes in cmd/ or pkg/"
    fi
  fi
  log "building ${BIN} (${version})"
  mkdir -p "$(dirname -- "$BIN")"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -buildvcs=false \
    -ldflags "-s -w -X main.version=${version}" -o "$(abs "$BIN")" ./cmd/coupon-producer)
}

# Writes <dir>/couponbase1.gz with the project's generator, once.
generate() { # <dir> <lines> <seed>
  local dir=$1 lines=$2 seed=$3
  [[ -s "${dir}/couponbase1.gz" ]] && return 0
  log "generating ${dir}/couponbase1.gz (${lines} lines; cached for later runs)"
  mkdir -p "$dir"
  (go run ./cmd/coupongen -dir "$(abs "$dir")" -lines "$lines" -files 1 -seed "$seed")
}

# One line of 40 MB: codes of the 10M-line file joined by spaces, no newline.
generate_longline() {
  local out=$FILE tmp
  [[ -s "$out" ]] && return 0
  generate "${DATA_DIR}/10m" 10000000 1
  log "generating ${out} (one 40 MB line; cached for later runs)"
  mkdir -p "$(dirname -- "$out")"
  tmp="${out}.tmp"
  igzip -dc "${DATA_DIR}/10m/couponbase1.gz" |
    LC_ALL=C awk -v max=40000000 'n < max { printf "%s ", $0; n += length($0) + 1 }' |
    gzip -6 >"$tmp"
  mv -f -- "$tmp" "$out"
}

# Sets LINES (as the producer counts them: a last line without '\n' counts),
# CODES (maximal runs of [A-Za-z0-9] of 8 to 10 bytes, the extractor's
# definition, counted here with tr and grep), BYTES (decompressed) and
# GZ_BYTES. Cached in .bench/counts/.
file_counts() {
  local f=$1 cache sum
  sum=$(cksum <<<"$f" | cut -d' ' -f1)
  cache="${BENCH_DIR}/counts/$(basename -- "$f").${sum}"
  GZ_BYTES=$(stat -c %s -- "$f")
  if [[ -s "$cache" && "$cache" -nt "$f" ]] && read -r LINES CODES BYTES <"$cache"; then
    return 0
  fi
  log "counting lines and codes of ${f} (once)"
  local nl last
  read -r nl BYTES < <(igzip -dc "$f" | LC_ALL=C wc -lc)
  last=$(igzip -dc "$f" | tail -c 1 | od -An -tx1 | tr -d ' \n')
  LINES=$nl
  [[ -n "$last" && "$last" != 0a ]] && LINES=$((nl + 1))
  CODES=$(igzip -dc "$f" | LC_ALL=C tr -cs 'A-Za-z0-9' '\n' | LC_ALL=C grep -cxE '[A-Za-z0-9]{8,10}' || true)
  mkdir -p "$(dirname -- "$cache")"
  printf '%s %s %s\n' "$LINES" "$CODES" "$BYTES" >"$cache"
}

# ------------------------------------------------------------------ broker --

BROKERS=${KAFKA_BROKERS:-}
EXTERNAL=0
[[ -n "$BROKERS" ]] && EXTERNAL=1
# Without KAFKA_BROKERS the benchmark runs its own instance of the local
# broker (hack/kafka-local) with its own state and ports: the shared
# development broker on 19092 is used, stopped and restarted by integration
# tests, which would disturb the measurements and be disturbed by them.
if [[ "$EXTERNAL" == 0 ]]; then
  BENCH_KAFKA_PORT=${BENCH_KAFKA_PORT:-19192}
  [[ "$BENCH_KAFKA_PORT" =~ ^[0-9]+$ ]] || die "BENCH_KAFKA_PORT must be a port number (got '${BENCH_KAFKA_PORT}')"
  KAFKA_LOCAL_DIR="$(abs "$BENCH_DIR")/kafka"
  export KAFKA_LOCAL_DIR
  export KAFKA_LOCAL_PORT=$BENCH_KAFKA_PORT
  export KAFKA_LOCAL_CONTROLLER_PORT=$((BENCH_KAFKA_PORT + 1))
fi
BROKER_PID=""
STARTED_BROKER=0
CREATED_TOPICS=()
RSS_FILES=()

start_broker() {
  if [[ "$EXTERNAL" == 1 ]]; then
    log "using the brokers in KAFKA_BROKERS: ${BROKERS}"
    NOTES+=("Broker CPU is not measured with KAFKA_BROKERS; Other CPU includes the broker if it runs on this machine.")
    return 0
  fi
  if ! "$KL" status >/dev/null 2>&1; then
    STARTED_BROKER=1
  fi
  BROKERS=$("$KL" start | tail -n 1)
  [[ -n "$BROKERS" ]] || die "kafka-local.sh start printed no bootstrap address"
  local pidfile="${KAFKA_LOCAL_DIR}/kafka.pid"
  if [[ -r "$pidfile" ]]; then
    BROKER_PID=$(<"$pidfile")
    [[ -r "/proc/${BROKER_PID}/stat" ]] || BROKER_PID=""
  fi
}

# A run is only comparable with the others if the broker stayed up.
check_broker() {
  [[ -z "$BROKER_PID" || -r "/proc/${BROKER_PID}/stat" ]] ||
    die "the broker (pid ${BROKER_PID}) stopped during the benchmark; see ${KAFKA_LOCAL_DIR}/kafka.log"
}

# kafka-topics against the bench broker.
topics() {
  if [[ "$EXTERNAL" == 1 ]]; then
    "$KL" run-class org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" "$@"
  else
    "$KL" topics "$@"
  fi
}

create_topic() { # <topic>
  topics --create --topic "$1" --partitions "$PARTITIONS" --replication-factor 1 >/dev/null
}

delete_topics() { # <topic>...
  local t
  for t in "$@"; do
    topics --delete --if-exists --topic "$t" >/dev/null 2>&1 || log "could not delete topic ${t}"
  done
}

# Prints the number of records in a topic: end minus start offsets.
count_records() { # <topic>
  if [[ "$EXTERNAL" == 0 ]]; then
    "$KL" consume-count "$1"
    return
  fi
  local ends starts
  ends=$("$KL" run-class org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$BROKERS" --topic "$1" --time latest) || return 1
  starts=$("$KL" run-class org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$BROKERS" --topic "$1" --time earliest) || return 1
  awk -F: -v t="$1" '
    FNR == NR { if ($1 == t) end[$2] = $3; next }
    $1 == t { start[$2] = $3 }
    END { s = 0; for (p in end) s += end[p] - start[p]; printf "%d\n", s }
  ' <(printf '%s\n' "$ends") <(printf '%s\n' "$starts")
}

cleanup() {
  local rc=$?
  if ((${#CREATED_TOPICS[@]} > 0)); then
    log "deleting leftover bench topics"
    delete_topics "${CREATED_TOPICS[@]}"
  fi
  if [[ "$STARTED_BROKER" == 1 && "${BENCH_KEEP_BROKER:-0}" != 1 ]]; then
    "$KL" stop || true
  fi
  exit "$rc"
}

forget_topics() { # <topic>...
  local t kept=() d
  for t in "${CREATED_TOPICS[@]}"; do
    for d in "$@"; do [[ "$t" == "$d" ]] && continue 2; done
    kept+=("$t")
  done
  CREATED_TOPICS=(${kept[@]+"${kept[@]}"})
}

# ----------------------------------------------------------------- measure --

TICK=$(getconf CLK_TCK)
readonly TICK

# CPU seconds the whole machine spent busy so far (steal excluded), in ticks.
machine_busy() {
  local _ u n s idle iowait irq sirq rest
  # shellcheck disable=SC2034  # idle and iowait are read only to be skipped
  read -r _ u n s idle iowait irq sirq rest </proc/stat
  printf '%s\n' $((u + n + s + irq + sirq))
}

# CPU ticks (user + system) of the broker process so far, or empty.
broker_ticks() {
  [[ -n "$BROKER_PID" && -r "/proc/${BROKER_PID}/stat" ]] || return 0
  # Fields after the "(comm)" field: utime and stime are the 12th and 13th.
  local stat
  stat=$(<"/proc/${BROKER_PID}/stat")
  stat=${stat##*) }
  awk '{ print $12 + $13 }' <<<"$stat"
}

# Producer settings come only from its command line: the environment
# variables it reads (named in its --help) are cleared for the runs.
producer_env() {
  local v
  PRODUCER_UNSET=(-u COUPON_FILES)
  while read -r v; do
    PRODUCER_UNSET+=(-u "$v")
  done < <("$BIN" --help 2>&1 | grep -o 'env [A-Z][A-Z0-9_]*' | awk '{ print $2 }' | sort -u)
}

# Waits, up to BENCH_QUIET_WAIT seconds, for a second in which the machine
# (the broker aside) is nearly idle, so that a run does not start in the
# middle of someone else's build or test. Runs that are disturbed anyway show
# it in their Other CPU.
wait_quiet() {
  local deadline=$((SECONDS + QUIET_WAIT)) b0 b1 k0 k1
  ((QUIET_WAIT > 0)) || return 0
  while ((SECONDS < deadline)); do
    b0=$(machine_busy)
    k0=$(broker_ticks)
    sleep 1
    b1=$(machine_busy)
    k1=$(broker_ticks)
    (((b1 - b0) - (${k1:-0} - ${k0:-0}) <= TICK / 10)) && return 0
  done
  log "  the machine is still busy after ${QUIET_WAIT}s; running anyway"
}

RESULTS="${RUN_DIR}/runs.tsv"

# Runs a command under /usr/bin/time and appends one line to RESULTS:
# kind round rc wall cpu rss_kib rss2_kib broker_cpu other_cpu.
# Extra RSS files (one number each) may be named in RSS_FILES; the first
# becomes rss_kib, the second rss2_kib, instead of time's own maximum.
timed() { # <kind> <round> <stdout> cmd...
  local kind=$1 round=$2 out=$3
  shift 3
  local tf="${RUN_DIR}/${kind}-${round}.time" ef="${RUN_DIR}/${kind}-${round}.log"
  local b0 b1 k0 k1 rc wall user sys rss rss2="-" cpu broker="-" other
  wait_quiet
  b0=$(machine_busy)
  k0=$(broker_ticks)
  if /usr/bin/time -f '%e %U %S %M' -o "$tf" "$@" >"$out" 2>"$ef"; then rc=0; else rc=$?; fi
  b1=$(machine_busy)
  k1=$(broker_ticks)
  check_broker
  read -r wall user sys rss < <(tail -n 1 "$tf")
  if ((${#RSS_FILES[@]} > 0)); then
    rss=$(tail -n 1 "${RSS_FILES[0]}" 2>/dev/null || echo 0)
    ((${#RSS_FILES[@]} > 1)) && rss2=$(tail -n 1 "${RSS_FILES[1]}" 2>/dev/null || echo 0)
  fi
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
  if [[ -n "$k0" && -n "$k1" ]]; then
    broker=$(awk -v a="$k0" -v b="$k1" -v t="$TICK" 'BEGIN { printf "%.2f", (b - a) / t }')
  fi
  other=$(awk -v a="$b0" -v b="$b1" -v t="$TICK" -v c="$cpu" -v k="$broker" \
    'BEGIN { o = (b - a) / t - c; if (k != "-") o -= k; printf "%.2f", o }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$kind" "$round" "$rc" "$wall" "$cpu" "$rss" "$rss2" "$broker" "$other" >>"$RESULTS"
  log "  ${kind} #${round}: exit ${rc}, ${wall} s wall, ${cpu} s CPU, ${rss} KiB RSS, broker ${broker} s CPU"
  return "$rc"
}

# Records the verdict of the last line of RESULTS in STATUS (kind round -> ok
# or the reason it failed).
declare -A STATUS=()
verdict() { # <kind> <round> <rc> <want> <got or "-">
  local kind=$1 round=$2 rc=$3 want=$4 got=$5
  if [[ "$rc" != 0 ]]; then
    STATUS[$kind,$round]="exit ${rc}"
  elif [[ "$got" != "-" && "$got" != "$want" ]]; then
    STATUS[$kind,$round]="${got} records, want ${want}"
  else
    STATUS[$kind,$round]=ok
    return 0
  fi
  log "  ${kind} #${round} FAILED: ${STATUS[$kind,$round]} (log: ${RUN_DIR}/${kind}-${round}.log)"
  tail -n 5 "${RUN_DIR}/${kind}-${round}.log" >&2 || true
}

run_producer() { # <round> <file> <topic>
  local rc=0 got=-
  CREATED_TOPICS+=("$3")
  RSS_FILES=()
  timed producer "$1" "${RUN_DIR}/producer-$1.out" \
    env "${PRODUCER_UNSET[@]}" "$BIN" --brokers "$BROKERS" --topic "$3" --progress-interval 0 \
    --partitions "$PARTITIONS" --log-format json ${producer_flags[@]+"${producer_flags[@]}"} "$2" || rc=$?
  got=$(count_records "$3") || got="unknown"
  verdict producer "$1" "$rc" "$CODES" "$got"
}

run_kcat() { # <round> <file> <topic>
  local rc=0 got=- pipeline
  CREATED_TOPICS+=("$3")
  create_topic "$3"
  RSS_FILES=("${RUN_DIR}/kcat-$1.rss-kcat" "${RUN_DIR}/kcat-$1.rss-igzip")
  # Each side of the pipe has its own time for its RSS; the outer time sums
  # the CPU of both.
  pipeline="set -o pipefail; /usr/bin/time -f %M -o $(printf %q "${RSS_FILES[1]}") igzip -dc $(printf %q "$2")"
  pipeline+=" | /usr/bin/time -f %M -o $(printf %q "${RSS_FILES[0]}") kcat -P -b $(printf %q "$BROKERS") -t $(printf %q "$3")"
  pipeline+=" $(printf '%q ' "${kcat_flags[@]}")"
  timed kcat "$1" "${RUN_DIR}/kcat-$1.out" bash -c "$pipeline" || rc=$?
  RSS_FILES=()
  got=$(count_records "$3") || got="unknown"
  verdict kcat "$1" "$rc" "$LINES" "$got"
}

run_dryrun() { # <round>
  local rc=0
  RSS_FILES=()
  timed dryrun "$1" /dev/null env "${PRODUCER_UNSET[@]}" "$BIN" --dry-run --log-format json "$FILE" || rc=$?
  verdict dryrun "$1" "$rc" - -
}

run_zcat() { # <round>
  local rc=0
  RSS_FILES=()
  timed zcat "$1" /dev/null zcat -- "$FILE" || rc=$?
  verdict zcat "$1" "$rc" - -
}

# ------------------------------------------------------------------ report --

machine_info() {
  CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  [[ -n "$CPU_MODEL" ]] || CPU_MODEL=$(uname -m)
  NPROC=$(nproc)
  MEM_GIB=$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
  KERNEL=$(uname -sr)
  GO_VERSION=$(go version | awk '{ print $3 }')
  KAFKA_VERSION=$(sed -n 's:.*<kafka\.version>[[:space:]]*\([^<[:space:]]*\)[[:space:]]*</kafka\.version>.*:\1:p' \
    hack/kafka-local/pom.xml | head -n 1)
  KCAT_VERSION=$(kcat -V 2>/dev/null | sed -n 's/^Version \([^ ]*\).*\(librdkafka [^ ]*\).*/\1 (\2)/p' | head -n 1)
  IGZIP_VERSION=$(igzip --version 2>/dev/null | awk 'NR == 1 { print $NF }')
  PRODUCER_VERSION=$("$BIN" --version 2>/dev/null | awk '{ print $2 }')
  HEAD_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
thousands() { LC_ALL=C printf "%'d" "$1" 2>/dev/null | sed ':a; s/\B[0-9]\{3\}\>/,&/; ta'; }

# Summary table: medians over the runs that passed, peak RSS over them.
summary_table() {
  awk -F'\t' -v codes="$CODES" -v lines="$LINES" -v okfile="${RUN_DIR}/status.tsv" '
    function median(list,   n, a, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
      if (n == 0) return ""
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    BEGIN {
      while ((getline l < okfile) > 0) { split(l, f, "\t"); ok[f[1] "," f[2]] = (f[3] == "ok") }
      name["producer"] = "A producer"; name["kcat"] = "B igzip \\| kcat"
      name["dryrun"] = "producer --dry-run"; name["zcat"] = "zcat"
      order[1] = "producer"; order[2] = "kcat"; order[3] = "dryrun"; order[4] = "zcat"
    }
    {
      k = $1; total[k]++
      if (!ok[k "," $2]) next
      good[k]++
      wall[k] = wall[k] " " $4; cpu[k] = cpu[k] " " $5
      if ($6 + 0 > rss[k]) rss[k] = $6 + 0
      if ($7 != "-" && $7 + 0 > rss2[k]) rss2[k] = $7 + 0
      if ($8 != "-") broker[k] = broker[k] " " $8
      other[k] = other[k] " " $9
    }
    END {
      print "| Run | OK | Wall s | CPU s | CPU µs/code | Mcodes/s | Peak RSS MiB | Broker CPU s | Other CPU s |"
      print "|---|---|---:|---:|---:|---:|---:|---:|---:|"
      for (o = 1; o <= 4; o++) {
        k = order[o]
        if (!total[k]) continue
        n = (k == "kcat") ? lines : codes
        if (!good[k]) { printf "| %s | 0/%d | | | | | | | |\n", name[k], total[k]; continue }
        w[k] = median(wall[k]); c[k] = median(cpu[k]); b[k] = median(broker[k])
        r = sprintf("%.1f", rss[k] / 1024)
        if (k == "kcat") r = sprintf("kcat %.1f, igzip %.1f", rss[k] / 1024, rss2[k] / 1024)
        printf "| %s | %d/%d | %.2f | %.2f | %.3f | %.2f | %s | %s | %s |\n", name[k], good[k], total[k],
          w[k], c[k], c[k] / n * 1e6, n / w[k] / 1e6, r, (b[k] == "" ? "-" : sprintf("%.2f", b[k])),
          sprintf("%.2f", median(other[k]))
      }
      ratio("producer", "kcat", "A / B")
      ratio("dryrun", "zcat", "dry-run / zcat", 1)
    }
    function ratio(x, y, label, nobroker,   bx) {
      if (!good[x] || !good[y]) return
      bx = (!nobroker && b[x] != "" && b[y] + 0 > 0) ? sprintf("%.2f", b[x] / b[y]) : "-"
      printf "| **ratio %s** | | **%.2f** | **%.2f** | **%.2f** | %.2f | %.2f | %s | |\n", label,
        w[x] / w[y], c[x] / c[y], (c[x] / codes) / (c[y] / (y == "kcat" ? lines : codes)),
        (codes / w[x]) / ((y == "kcat" ? lines : codes) / w[y]), rss[x] / rss[y], bx
    }
  ' "$RESULTS"
}

runs_table() {
  awk -F'\t' -v okfile="${RUN_DIR}/status.tsv" '
    BEGIN {
      while ((getline l < okfile) > 0) { split(l, f, "\t"); st[f[1] "," f[2]] = f[3] }
      print "| Order | Run | Round | Verdict | Wall s | CPU s | RSS MiB | Broker CPU s | Other CPU s |"
      print "|---:|---|---:|---|---:|---:|---:|---:|---:|"
    }
    {
      r = sprintf("%.1f", $6 / 1024)
      if ($7 != "-") r = r sprintf(" (igzip %.1f)", $7 / 1024)
      printf "| %d | %s | %s | %s | %.2f | %.2f | %s | %s | %s |\n", NR, $1, $2, st[$1 "," $2], $4, $5, r, $8, $9
    }' "$RESULTS"
}

write_report() {
  local kcat_cmd producer_cmd flags_text=${PRODUCER_FLAGS:-"(none)"} broker_text
  producer_cmd="${BIN} --brokers ${BROKERS:-B} --topic bench-producer-${RUN_ID}-N --progress-interval 0 --partitions ${PARTITIONS} --log-format json ${PRODUCER_FLAGS:+${PRODUCER_FLAGS} }${FILE}"
  kcat_cmd="igzip -dc ${FILE} | kcat -P -b ${BROKERS:-B} -t bench-kcat-${RUN_ID}-N ${KCAT_FLAGS}"
  if [[ "$EXTERNAL" == 1 ]]; then
    broker_text="KAFKA_BROKERS=${BROKERS} (not started by the benchmark; broker CPU not measured)"
  else
    broker_text="a private single-node Apache Kafka ${KAFKA_VERSION} (hack/kafka-local, state in .bench/kafka) on ${BROKERS}, on the same machine"
  fi
  {
    printf '# Coupon producer benchmark\n\n'
    printf -- '- Date: %s\n' "$DATE"
    # shellcheck disable=SC2016  # the backquotes are markdown
    printf -- '- Producer: %s, built as %s (`go build -trimpath`, CGO off); repository HEAD %s\n' "$SOURCE" "$PRODUCER_VERSION" "$HEAD_COMMIT"
    printf -- '- Machine: %s CPUs (nproc), %s, %s GiB RAM, %s\n' "$NPROC" "$CPU_MODEL" "$MEM_GIB" "$KERNEL"
    printf -- '- Tools: Go %s, Kafka %s (pom), kcat %s, igzip %s\n' "${GO_VERSION#go}" "$KAFKA_VERSION" "${KCAT_VERSION:-n/a}" "${IGZIP_VERSION:-n/a}"
    printf -- '- Broker: %s\n' "$broker_text"
    # shellcheck disable=SC2016  # the backquotes are markdown
    printf -- '- File: `%s` (%s): %s MiB gzip, %s MiB decompressed, %s lines, %s codes\n' \
      "$FILE" "$FILE_KIND" "$(mib "$GZ_BYTES")" "$(mib "$BYTES")" "$(thousands "$LINES")" "$(thousands "$CODES")"
    printf -- '- Rounds: %s; topics of %s partitions, replication factor 1, deleted after each round; warm-up: %s\n' \
      "$ROUNDS" "$PARTITIONS" "$([[ "$WARMUP" == 1 && "$NEED_KAFKA" == 1 ]] && echo "yes (1M-line file, untimed)" || echo no)"
    printf -- '- PRODUCER_FLAGS: %s\n' "$flags_text"
    printf -- '- Load average before the runs: %s\n\n' "$LOADAVG"
    printf 'Commands (N is the round):\n\n```sh\n'
    [[ "${PART[producer]}" == 1 ]] && printf '%s\n' "$producer_cmd"
    [[ "${PART[kcat]}" == 1 ]] && printf '%s\n' "$kcat_cmd"
    [[ "${PART[dryrun]}" == 1 ]] && printf '%s\n' "${BIN} --dry-run --log-format json ${FILE} > /dev/null" "zcat ${FILE} > /dev/null"
    printf '```\n\n'
    printf '## Summary\n\n'
    summary_table
    printf '\n'
    printf 'Medians over the runs that passed. CPU is user + system of the measured\n'
    printf 'command (for B: igzip, kcat and the shell together). µs/code and Mcodes/s\n'
    printf 'divide by the codes (for B: the lines, one record each). Peak RSS is the\n'
    printf 'highest over the runs (for B: each process of the pipe on its own; the\n'
    printf 'ratio uses kcat'"'"'s). Broker CPU: the broker JVM during the run. Other CPU:\n'
    printf 'everything else busy on the machine during the run (should be near 0).\n\n'
    printf '## All runs, in the order they ran\n\n'
    runs_table
    if ((${#NOTES[@]} > 0)); then
      printf '\n## Notes\n\n'
      printf -- '- %s\n' "${NOTES[@]}"
    fi
  } >"$REPORT"
}

# -------------------------------------------------------------------- main --

main() {
  ensure_tools
  mkdir -p "$BENCH_DIR"
  rm -rf -- "$RUN_DIR"
  mkdir -p "$RUN_DIR"
  : >"$RESULTS"

  build_producer
  producer_env
  case "$FILE" in
    "${DATA_DIR}/10m/couponbase1.gz") generate "${DATA_DIR}/10m" 10000000 1 ;;
    "${DATA_DIR}/100m/couponbase1.gz") generate "${DATA_DIR}/100m" 100000000 1 ;;
    "${DATA_DIR}/longline/couponbase-longline.gz") generate_longline ;;
  esac
  file_counts "$FILE"
  if [[ "${PART[kcat]}" == 1 && "$LINES" != "$CODES" ]]; then
    NOTES+=("The file has ${LINES} lines but ${CODES} codes: kcat sends lines, the producer codes, so A and B do not send the same records.")
  fi
  machine_info
  DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  RUN_ID=$(date -u +%Y%m%d%H%M%S)
  LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # Read the file once so that round 1 does not pay for a cold page cache.
  cat -- "$FILE" >/dev/null

  if [[ "$NEED_KAFKA" == 1 ]]; then
    start_broker
    if [[ "$WARMUP" == 1 ]]; then
      generate "${DATA_DIR}/1m" 1000000 2
      log "warm-up (untimed) on ${DATA_DIR}/1m/couponbase1.gz"
      local wp="bench-warmup-producer-${RUN_ID}" wk="bench-warmup-kcat-${RUN_ID}"
      CREATED_TOPICS+=("$wp" "$wk")
      env "${PRODUCER_UNSET[@]}" "$BIN" --brokers "$BROKERS" --topic "$wp" --progress-interval 0 \
        --partitions "$PARTITIONS" --log-format json ${producer_flags[@]+"${producer_flags[@]}"} \
        "${DATA_DIR}/1m/couponbase1.gz" 2>"${RUN_DIR}/warmup-producer.log" ||
        die "warm-up producer run failed; see ${RUN_DIR}/warmup-producer.log"
      if [[ "${PART[kcat]}" == 1 ]]; then
        create_topic "$wk"
        igzip -dc "${DATA_DIR}/1m/couponbase1.gz" | kcat -P -b "$BROKERS" -t "$wk" "${kcat_flags[@]}" ||
          die "warm-up kcat run failed"
      fi
      delete_topics "$wp" "$wk"
      forget_topics "$wp" "$wk"
    fi
    local i tp tk
    for ((i = 1; i <= ROUNDS; i++)); do
      log "round ${i}/${ROUNDS}: Kafka"
      tp="bench-producer-${RUN_ID}-${i}"
      tk="bench-kcat-${RUN_ID}-${i}"
      [[ "${PART[producer]}" == 1 ]] && run_producer "$i" "$FILE" "$tp"
      [[ "${PART[kcat]}" == 1 ]] && run_kcat "$i" "$FILE" "$tk"
      delete_topics "$tp" "$tk"
      forget_topics "$tp" "$tk"
    done
  fi

  if [[ "${PART[dryrun]}" == 1 ]]; then
    # One untimed run checks that the dry run prints every code.
    local n
    n=$(env "${PRODUCER_UNSET[@]}" "$BIN" --dry-run --log-format json "$FILE" 2>"${RUN_DIR}/dryrun-check.log" | wc -l) ||
      n="an error (see ${RUN_DIR}/dryrun-check.log) after $n"
    [[ "$n" == "$CODES" ]] || NOTES+=("Dry-run check FAILED: it printed ${n} codes, want ${CODES}.")
    for ((i = 1; i <= ROUNDS; i++)); do
      log "round ${i}/${ROUNDS}: dry-run and zcat"
      run_dryrun "$i"
      run_zcat "$i"
    done
  fi

  # Flag runs during which something else kept the machine busy.
  local busy
  busy=$(awk -F'\t' '$9 + 0 > 0.5 && $9 + 0 > 0.1 * $5 { n++; l = l sprintf("%s %s#%s (%.1f s)", sep, $1, $2, $9); sep = "," }
    END { if (n) printf "%d", n; print l }' "$RESULTS")
  if [[ -n "$busy" ]]; then
    NOTES+=("Other work used the CPUs during ${busy%% *} run(s): ${busy#* }. Their figures are less reliable; compare runs with little Other CPU, or run again.")
  fi

  local k
  for k in "${!STATUS[@]}"; do
    printf '%s\t%s\t%s\n' "${k%,*}" "${k#*,}" "${STATUS[$k]}"
  done >"${RUN_DIR}/status.tsv"
  write_report
  printf '\n'
  cat "$REPORT"
  log "report written to ${REPORT}"

  local failed=0
  for k in "${!STATUS[@]}"; do
    [[ "${STATUS[$k]}" == ok ]] || failed=$((failed + 1))
  done
  grep -q 'Dry-run check FAILED' <<<"${NOTES[*]:-}" && failed=$((failed + 1))
  ((failed == 0)) || die "${failed} run(s) failed; see the report"
}

main
