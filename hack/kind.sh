#!/usr/bin/env bash
# The Kubernetes path on a laptop: a kind cluster with the coupon files
# mounted into its node, the dev Kafka of k8s/, the chart installed with its
# kind values, one ad-hoc run of each CronJob, and each topic's record count.
#
#   hack/kind.sh          # up: create/reuse the cluster, build, install, run, count
#   hack/kind.sh down     # delete the cluster
#
# Needs a running Docker engine, Go and kubectl. kind and helm are run at
# pinned versions through `go run`, so nothing else is installed.
# Environment: DATA (default data/coupons), DEMO_LINES (lines per generated
# file, default 3000000), KIND_CLUSTER (default coupon-producer).
set -euo pipefail
cd "$(dirname "$0")/.."

KIND_VERSION=v0.33.0
HELM_VERSION=v3.22.0
CLUSTER=${KIND_CLUSTER:-coupon-producer}
DATA=${DATA:-data/coupons}
DEMO_LINES=${DEMO_LINES:-3000000}
NS=coupons
RELEASE=coupon-producer
CHART=charts/coupon-producer
CTX="kind-$CLUSTER"
JOBS=(couponbase1 couponbase2 couponbase3)

kind() { go run "sigs.k8s.io/kind@$KIND_VERSION" "$@"; }
helm() { go run "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" --kube-context "$CTX" "$@"; }
kc() { kubectl --context "$CTX" -n "$NS" "$@"; }

# waitjob prints the Job's final condition (Complete or Failed) once it has one.
waitjob() {
  local job=$1 deadline=$((SECONDS + 900)) state
  while ((SECONDS < deadline)); do
    state=$(kc get job "$job" -o jsonpath='{.status.conditions[?(@.status=="True")].type}')
    case "$state" in
      *Complete*) echo Complete; return 0 ;;
      *Failed*) echo Failed; return 0 ;;
    esac
    sleep 5
  done
  echo Timeout
}

if [[ "${1:-up}" == "down" ]]; then
  kind delete cluster --name "$CLUSTER"
  exit 0
fi
if [[ "${1:-up}" != "up" ]]; then
  echo "usage: hack/kind.sh [up|down]" >&2
  exit 2
fi

for tool in docker kubectl go; do
  command -v "$tool" >/dev/null || { echo "kind.sh: $tool is required" >&2; exit 1; }
done
if ! docker info >/dev/null 2>&1; then
  echo "kind.sh: no Docker engine answers (docker info failed); kind needs one" >&2
  exit 1
fi

# The image tag is the chart's appVersion, the tag the chart runs by default.
tag=$(awk -F'"' '/^appVersion:/ { print $2 }' "$CHART/Chart.yaml")
[[ -n "$tag" ]] || { echo "kind.sh: no quoted appVersion in $CHART/Chart.yaml" >&2; exit 1; }
image="coupon-producer:$tag"

echo "== coupon files in $DATA"
go run ./cmd/coupongen -dir "$DATA" -lines "$DEMO_LINES"
data_abs=$(cd "$DATA" && pwd)

echo "== kind cluster $CLUSTER"
# Not `kind get clusters | grep -q`: grep -q exits at the first match, and
# under pipefail kind's write to the closed pipe would fail the test.
clusters=$(kind get clusters 2>/dev/null || true)
if ! grep -qx "$CLUSTER" <<<"$clusters"; then
  config=$(mktemp)
  trap 'rm -f "$config"' EXIT
  # Bash replaces the placeholder, not sed, so that no character of the
  # path (|, &, \) is taken as sed syntax; the YAML string is single-quoted,
  # where only ' needs escaping, by doubling it.
  template=$(<k8s/kind-cluster.yaml)
  quoted=${data_abs//\'/\'\'}
  printf '%s\n' "${template//@DATA_DIR@/"$quoted"}" >"$config"
  kind create cluster --name "$CLUSTER" --config "$config" --wait 180s
fi

echo "== image $image"
docker build -t "$image" --build-arg VERSION="$tag" .
kind load docker-image "$image" --name "$CLUSTER"

echo "== namespace, data volume and dev Kafka"
kubectl --context "$CTX" apply -f k8s/namespace.yaml
kubectl --context "$CTX" apply -f k8s/data.yaml -f k8s/kafka.yaml
kc rollout status deployment/kafka --timeout=300s

echo "== helm install $RELEASE"
helm upgrade --install "$RELEASE" "$CHART" -n "$NS" -f "$CHART/ci/kind-values.yaml" --wait
helm test "$RELEASE" -n "$NS" --logs

echo "== one run of each CronJob"
stamp=$(date +%s)
runs=()
for j in "${JOBS[@]}"; do
  run="$RELEASE-$j-manual-$stamp"
  kc create job --from="cronjob/$RELEASE-$j" "$run"
  runs+=("$run")
done
status=0
for run in "${runs[@]}"; do
  result=$(waitjob "$run")
  echo "$run: $result"
  if [[ "$result" != Complete ]]; then
    kc logs "job/$run" --tail=50 || true
    status=1
  fi
done

echo "== records per topic"
for j in "${JOBS[@]}"; do
  topic="$j.gz"
  # Sum of the partitions' end offsets: every record written to the topic
  # (a second run of this script adds to the first one's). The tool runs in
  # the broker's container: without a heap of its own it would take the
  # broker's 512 MiB inside the container's 1 GiB limit.
  if offsets=$(kc exec deployment/kafka -- env KAFKA_HEAP_OPTS=-Xmx64m \
    /opt/kafka/bin/kafka-get-offsets.sh --bootstrap-server localhost:9092 --topic "$topic" --time -1); then
    echo "$topic: $(awk -F: '{ n += $3 } END { print n + 0 }' <<<"$offsets")"
  else
    # A Job that failed before it created its topic: say so and count the
    # others, rather than stop here under set -e.
    echo "$topic: no count (no such topic? its Job failed before creating it)"
    status=1
  fi
done
exit "$status"
