#!/usr/bin/env bash
# kafka-local.sh: run a real single-node Apache Kafka broker (KRaft mode,
# broker + controller in one JVM) from Maven Central jars, without Docker.
#
# Usage: kafka-local.sh <command> [args]   (see `kafka-local.sh help`)
#
# Progress and diagnostics go to stderr; stdout carries only results
# (the bootstrap address, a record count, or the output of a Kafka tool).
set -euo pipefail

# Resolve the script's real directory, following symlinks, from any cwd.
script_dir() {
  local src=${BASH_SOURCE[0]} dir
  while [[ -L "$src" ]]; do
    dir=$(cd -P -- "$(dirname -- "$src")" && pwd)
    src=$(readlink -- "$src")
    [[ "$src" == /* ]] || src="${dir}/${src}"
  done
  cd -P -- "$(dirname -- "$src")" && pwd
}
SCRIPT_DIR=$(script_dir)
readonly SCRIPT_DIR
readonly POM="${SCRIPT_DIR}/pom.xml"

die() { printf 'kafka-local: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'kafka-local: %s\n' "$*" >&2; }

# ---------------------------------------------------------------- settings --

repo_root() {
  local top
  if top=$(git -C "$SCRIPT_DIR" rev-parse --show-toplevel 2>/dev/null) && [[ -n "$top" ]]; then
    printf '%s\n' "$top"
  else
    # hack/kafka-local -> repository root
    (cd -- "${SCRIPT_DIR}/../.." && pwd -P)
  fi
}

pom_kafka_version() {
  sed -n 's:.*<kafka\.version>[[:space:]]*\([^<[:space:]]*\)[[:space:]]*</kafka\.version>.*:\1:p' "$POM" | head -n 1
}

KAFKA_VERSION="${KAFKA_LOCAL_VERSION:-$(pom_kafka_version)}"
[[ -n "$KAFKA_VERSION" ]] || die "cannot read <kafka.version> from ${POM}"
readonly KAFKA_VERSION

readonly HOST="127.0.0.1"
readonly PORT="${KAFKA_LOCAL_PORT:-19092}"
readonly CONTROLLER_PORT="${KAFKA_LOCAL_CONTROLLER_PORT:-19093}"
readonly BOOTSTRAP="${HOST}:${PORT}"
readonly NODE_ID=1
readonly START_TIMEOUT="${KAFKA_LOCAL_START_TIMEOUT:-90}"
readonly STOP_TIMEOUT="${KAFKA_LOCAL_STOP_TIMEOUT:-30}"
readonly LOG_LEVEL="${KAFKA_LOCAL_LOG_LEVEL:-}"

CACHE_DIR="${KAFKA_LOCAL_CACHE:-${HOME:?HOME is not set; set KAFKA_LOCAL_CACHE}/.cache/coupon-pipeline/kafka-${KAFKA_VERSION}}"
readonly CACHE_DIR
readonly LIB_DIR="${CACHE_DIR}/lib"
readonly STAMP="${CACHE_DIR}/.fetch-complete"

STATE_DIR="${KAFKA_LOCAL_DIR:-$(repo_root)/.kafka-local}"
readonly STATE_DIR
readonly DATA_DIR="${STATE_DIR}/data"
readonly PROPS="${STATE_DIR}/server.properties"
readonly PID_FILE="${STATE_DIR}/kafka.pid"
readonly LOG_FILE="${STATE_DIR}/kafka.log"
readonly CLUSTER_ID_FILE="${STATE_DIR}/cluster.id"

for v in PORT CONTROLLER_PORT START_TIMEOUT STOP_TIMEOUT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "${v} must be a non-negative integer (got '${!v}')"
done
[[ "$PORT" != "$CONTROLLER_PORT" ]] || die "broker and controller ports must differ"

# Environment values holding several options are split on whitespace.
read -r -a BROKER_HEAP_OPTS <<<"${KAFKA_LOCAL_HEAP_OPTS:--Xms256m -Xmx512m}"
read -r -a BROKER_JVM_OPTS <<<"${KAFKA_LOCAL_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true}"
# Short-lived CLI tools: small heap, fast JVM start-up.
read -r -a TOOL_JVM_OPTS <<<"${KAFKA_LOCAL_TOOL_JVM_OPTS:--Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true}"
read -r -a MVN_ARGS <<<"${KAFKA_LOCAL_MVN_ARGS:-}"

# ------------------------------------------------------------------ helpers --

java_bin() {
  if [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
    printf '%s\n' "${JAVA_HOME}/bin/java"
  elif command -v java >/dev/null 2>&1; then
    command -v java
  else
    die "java not found (Kafka ${KAFKA_VERSION} needs Java 17+; set JAVA_HOME or PATH)"
  fi
}

check_java() {
  local java ver major
  java=$(java_bin)
  ver=$("$java" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)
  major=${ver%%.*}
  if [[ "$major" =~ ^[0-9]+$ ]] && ((major < 17)); then
    die "Kafka ${KAFKA_VERSION} needs Java 17+, but ${java} is version ${ver}"
  fi
}

classpath() {
  # The script directory comes first so that simplelogger.properties is found.
  printf '%s:%s/*\n' "$SCRIPT_DIR" "$LIB_DIR"
}

log_level_opts() {
  if [[ -n "$LOG_LEVEL" ]]; then
    printf '%s\n' "-Dorg.slf4j.simpleLogger.defaultLogLevel=${LOG_LEVEL}"
  fi
}

# Run a Kafka class in the foreground with the cached classpath.
run_tool() { # <class> [args...]
  local java cls=$1
  shift
  java=$(java_bin)
  local -a opts=("${TOOL_JVM_OPTS[@]}")
  local lvl
  lvl=$(log_level_opts)
  [[ -n "$lvl" ]] && opts+=("$lvl")
  "$java" "${opts[@]}" -cp "$(classpath)" "$cls" "$@"
}

# Succeeds if something accepts TCP connections on host:port.
port_open() { # <host> <port>
  if command -v timeout >/dev/null 2>&1; then
    # shellcheck disable=SC2016  # $0/$1 are expanded by the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
  else
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
  fi
}

# Prints the pid of the broker started from this state dir, if it is alive.
broker_pid() {
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  pid=$(<"$PID_FILE")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against pid reuse where /proc is available.
  if [[ -r "/proc/${pid}/cmdline" ]]; then
    local args
    args=$(tr '\0' '\n' <"/proc/${pid}/cmdline")
    grep -qxF -- "$PROPS" <<<"$args" || return 1
  fi
  printf '%s\n' "$pid"
}

# Broker answers API requests and reports itself registered and unfenced.
broker_ready() {
  local out
  local -a guard=()
  command -v timeout >/dev/null 2>&1 && guard=(timeout 60)
  out=$(${guard[@]+"${guard[@]}"} "$(java_bin)" "${TOOL_JVM_OPTS[@]}" -cp "$(classpath)" \
    org.apache.kafka.tools.BrokerApiVersionsCommand \
    --bootstrap-server "$BOOTSTRAP" 2>/dev/null) || return 1
  # e.g. "127.0.0.1:19092 (id: 1 rack: null isFenced: false) -> (" ...
  awk -v id="(id: ${NODE_ID} " '
    index($0, id) && !index($0, "isFenced: true") { ok = 1 }
    END { exit !ok }' <<<"$out"
}

print_log_tail() {
  if [[ -f "$LOG_FILE" ]]; then
    log "last lines of ${LOG_FILE}:"
    tail -n 40 "$LOG_FILE" >&2 || true
  fi
}

# ----------------------------------------------------------------- commands --

cmd_fetch() {
  command -v mvn >/dev/null 2>&1 || [[ -n "${MVN:-}" ]] || die "mvn not found (set MVN or PATH)"
  local want tmp
  want="kafka=${KAFKA_VERSION} pom=$(cksum <"$POM" | cut -d' ' -f1)"
  if [[ -f "$STAMP" && "$(<"$STAMP")" == "$want" && -d "$LIB_DIR" ]]; then
    return 0
  fi
  log "fetching Kafka ${KAFKA_VERSION} jars into ${LIB_DIR}"
  mkdir -p "$CACHE_DIR"
  tmp=$(mktemp -d "${CACHE_DIR}/lib.tmp.XXXXXX")
  # shellcheck disable=SC2064  # expand $tmp now: it is local to this function
  trap "rm -rf -- '${tmp}'" EXIT
  # Some Maven 3.8 builds print bare ANSI resets even with -B -q: strip them.
  "${MVN:-mvn}" -B -q -Dstyle.color=never ${MVN_ARGS[@]+"${MVN_ARGS[@]}"} -f "$POM" \
    -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies \
    -DincludeScope=runtime \
    -DoutputDirectory="$tmp" </dev/null 2>&1 |
    sed -e $'s/\x1b\\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2 ||
    die "maven could not resolve the Kafka ${KAFKA_VERSION} jars"
  compgen -G "${tmp}/kafka_2.13-*.jar" >/dev/null || die "kafka_2.13 jar missing after fetch"
  compgen -G "${tmp}/kafka-tools-*.jar" >/dev/null || die "kafka-tools jar missing after fetch"
  rm -rf -- "$LIB_DIR"
  mv -- "$tmp" "$LIB_DIR"
  trap - EXIT
  printf '%s\n' "$want" >"$STAMP"
  log "fetched $(find "$LIB_DIR" -name '*.jar' | wc -l | tr -d ' ') jars"
}

write_properties() {
  cat >"$PROPS" <<EOF
# Generated by kafka-local.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=${NODE_ID}
controller.quorum.voters=${NODE_ID}@${HOST}:${CONTROLLER_PORT}
listeners=PLAINTEXT://${HOST}:${PORT},CONTROLLER://${HOST}:${CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://${HOST}:${PORT}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=${DATA_DIR}

# Single node: replication factor 1 and min ISR 1 everywhere.
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1

num.partitions=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
EOF
}

format_storage() {
  [[ -f "${DATA_DIR}/meta.properties" ]] && return 0
  local cid
  if [[ -s "$CLUSTER_ID_FILE" ]]; then
    cid=$(<"$CLUSTER_ID_FILE")
  else
    cid=$(run_tool kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    [[ -n "$cid" ]] || die "kafka.tools.StorageTool random-uuid produced no id"
    printf '%s\n' "$cid" >"$CLUSTER_ID_FILE"
  fi
  log "formatting ${DATA_DIR} (cluster id ${cid})"
  run_tool kafka.tools.StorageTool format -t "$cid" -c "$PROPS" >/dev/null 2>"${STATE_DIR}/format.log" || {
    cat "${STATE_DIR}/format.log" >&2
    die "storage format failed"
  }
}

# Returns 0 once the broker is ready; prints the log tail and returns 1 if the
# process dies or START_TIMEOUT (counted from <t0>, in $SECONDS) runs out.
wait_ready() { # <pid> <t0>
  local pid=$1 t0=$2 tcp=0
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      print_log_tail
      log "broker process ${pid} exited during start-up"
      return 1
    fi
    if ((tcp == 0)) && port_open "$HOST" "$PORT"; then
      tcp=1
    fi
    if ((tcp == 1)) && broker_ready; then
      return 0
    fi
    if ((SECONDS - t0 >= START_TIMEOUT)); then
      print_log_tail
      log "broker not ready on ${BOOTSTRAP} after ${START_TIMEOUT}s (pid ${pid}, log ${LOG_FILE})"
      return 1
    fi
    sleep 0.2
  done
}

cmd_start() {
  local t0=$SECONDS pid
  check_java
  cmd_fetch
  mkdir -p "$STATE_DIR"
  # Keep the state dir out of git wherever it lives.
  [[ -f "${STATE_DIR}/.gitignore" ]] || printf '*\n' >"${STATE_DIR}/.gitignore"

  # Serialise concurrent starts on the same state dir (fd 9 is closed for java).
  if command -v flock >/dev/null 2>&1; then
    exec 9>"${STATE_DIR}/.lock"
    flock -w "$((START_TIMEOUT + 30))" 9 || die "timed out waiting for another kafka-local start"
  fi

  if pid=$(broker_pid); then
    log "broker already running (pid ${pid}); checking it is ready"
    wait_ready "$pid" "$t0" || die "running broker (pid ${pid}) is not healthy; try: $(basename -- "$0") stop"
    log "ready on ${BOOTSTRAP}"
    printf '%s\n' "$BOOTSTRAP"
    return 0
  fi
  rm -f -- "$PID_FILE"

  local p
  for p in "$PORT" "$CONTROLLER_PORT"; do
    if port_open "$HOST" "$p"; then
      die "port ${HOST}:${p} is already in use by another process (set KAFKA_LOCAL_PORT / KAFKA_LOCAL_CONTROLLER_PORT)"
    fi
  done

  write_properties
  format_storage

  [[ -f "$LOG_FILE" ]] && mv -f -- "$LOG_FILE" "${LOG_FILE}.prev"
  local java lvl
  java=$(java_bin)
  local -a opts=("${BROKER_HEAP_OPTS[@]}" "${BROKER_JVM_OPTS[@]}")
  lvl=$(log_level_opts)
  [[ -n "$lvl" ]] && opts+=("$lvl")
  log "starting Kafka ${KAFKA_VERSION} (state ${STATE_DIR})"
  t0=$SECONDS # the start timeout covers the broker only, not fetch/format
  nohup "$java" "${opts[@]}" -cp "$(classpath)" kafka.Kafka "$PROPS" \
    </dev/null >"$LOG_FILE" 2>&1 9>&- &
  pid=$!
  printf '%s\n' "$pid" >"$PID_FILE"

  if ! wait_ready "$pid" "$t0"; then
    cmd_stop
    die "start failed"
  fi
  log "ready on ${BOOTSTRAP} (pid ${pid}, $((SECONDS - t0))s)"
  printf '%s\n' "$BOOTSTRAP"
}

cmd_stop() {
  local pid waited=0
  if ! pid=$(broker_pid); then
    rm -f -- "$PID_FILE"
    log "broker not running"
    return 0
  fi
  log "stopping broker (pid ${pid})"
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if ((waited >= STOP_TIMEOUT * 10)); then
      log "broker did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  # Reap a SIGKILLed process before returning.
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f -- "$PID_FILE"
  log "stopped"
}

cmd_clean() {
  cmd_stop
  if [[ -d "$STATE_DIR" ]]; then
    log "removing ${STATE_DIR}"
    rm -rf -- "$STATE_DIR"
  fi
}

cmd_status() {
  local pid
  if pid=$(broker_pid) && port_open "$HOST" "$PORT"; then
    log "running (pid ${pid}) on ${BOOTSTRAP}"
    printf '%s\n' "$BOOTSTRAP"
    return 0
  fi
  log "not running"
  return 1
}

cmd_consume_count() {
  [[ $# -eq 1 && -n "$1" ]] || die "usage: kafka-local.sh consume-count TOPIC"
  local topic=$1 ends starts
  cmd_fetch
  port_open "$HOST" "$PORT" || die "no broker reachable on ${BOOTSTRAP}"
  # --topic is a regular expression; keep only exact matches of the name.
  ends=$(run_tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$BOOTSTRAP" \
    --topic "$topic" --time latest) || die "GetOffsetShell failed for topic ${topic}"
  starts=$(run_tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$BOOTSTRAP" \
    --topic "$topic" --time earliest) || die "GetOffsetShell failed for topic ${topic}"
  printf '%s\n' "$ends" | awk -F: -v t="$topic" '$1 == t { n++ } END { exit n ? 0 : 1 }' ||
    die "topic ${topic} not found on ${BOOTSTRAP}"
  awk -F: -v t="$topic" '
    FNR == NR { if ($1 == t) end[$2] = $3; next }
    $1 == t { start[$2] = $3 }
    END { s = 0; for (p in end) s += end[p] - start[p]; printf "%d\n", s }
  ' <(printf '%s\n' "$ends") <(printf '%s\n' "$starts")
}

cmd_run_class() {
  [[ $# -ge 1 ]] || die "usage: kafka-local.sh run-class CLASS [ARGS...]"
  cmd_fetch
  run_tool "$@"
}

cmd_topics() {
  cmd_fetch
  run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" "$@"
}

usage() {
  cat <<EOF
Usage: $(basename -- "$0") <command> [args]

Single-node Apache Kafka ${KAFKA_VERSION} (KRaft) from Maven Central jars.

Commands:
  fetch                 download the jars into the cache (no-op when complete)
  start                 fetch if needed, format storage on first use, start the
                        broker and wait until it is ready; prints the bootstrap
                        address (${BOOTSTRAP}) as the last stdout line
  stop                  SIGTERM the broker (SIGKILL after ${STOP_TIMEOUT}s); keeps data
  clean                 stop, then delete the state directory
  status                exit 0 (and print the bootstrap address) if running
                        and reachable, 1 otherwise
  consume-count TOPIC   print the number of records in TOPIC (sum over
                        partitions of end offset - start offset)
  topics ARGS...        org.apache.kafka.tools.TopicCommand with
                        --bootstrap-server ${BOOTSTRAP}
  run-class CLASS ARGS  run any class on the Kafka classpath (alias: java-class)
  bootstrap             print the bootstrap address
  help                  this text

Environment (current value):
  KAFKA_LOCAL_PORT             broker port (${PORT})
  KAFKA_LOCAL_CONTROLLER_PORT  controller port (${CONTROLLER_PORT})
  KAFKA_LOCAL_DIR              state dir (${STATE_DIR})
  KAFKA_LOCAL_CACHE            jar cache (${CACHE_DIR})
  KAFKA_LOCAL_VERSION          Kafka version (${KAFKA_VERSION}, from pom.xml)
  KAFKA_LOCAL_START_TIMEOUT    seconds to wait for readiness (${START_TIMEOUT})
  KAFKA_LOCAL_STOP_TIMEOUT     seconds to wait before SIGKILL (${STOP_TIMEOUT})
  KAFKA_LOCAL_HEAP_OPTS        broker heap (${BROKER_HEAP_OPTS[*]})
  KAFKA_LOCAL_JVM_OPTS         other broker JVM options
  KAFKA_LOCAL_TOOL_JVM_OPTS    JVM options for CLI tools
  KAFKA_LOCAL_LOG_LEVEL        slf4j level override (default: warn)
  KAFKA_LOCAL_MVN_ARGS         extra Maven arguments for fetch
  JAVA_HOME, MVN               java / mvn to use
EOF
}

main() {
  local cmd=${1:-help}
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    clean) cmd_clean ;;
    status) cmd_status ;;
    consume-count) cmd_consume_count "$@" ;;
    topics) cmd_topics "$@" ;;
    run-class | java-class) cmd_run_class "$@" ;;
    bootstrap) printf '%s\n' "$BOOTSTRAP" ;;
    help | -h | --help) usage ;;
    *)
      usage >&2
      die "unknown command: ${cmd}"
      ;;
  esac
}

main "$@"
