#!/usr/bin/env bash
# Runs every test of the project. Starts the local real Kafka broker for the
# integration tests unless COUPON_TEST_BROKERS names one, and stops it again
# if it started it. With CI=true a broker that cannot start fails the run;
# elsewhere, without Java, the integration tests skip and say how to run them.
set -euo pipefail
cd "$(dirname "$0")/.."

kafka() { go run ./hack/kafkactl "$@"; }
# The tests' broker is not the demo's (make demo, make kafka-up): its own
# port and state, emptied before it starts, so that topics the tests write
# (couponbase1.gz among them) never mix with the demo's counts, and every
# run starts from an empty broker.
export KAFKA_LOCAL_PORT=${KAFKA_LOCAL_PORT:-19094}
export KAFKA_LOCAL_CONTROLLER_PORT=${KAFKA_LOCAL_CONTROLLER_PORT:-19095}
export KAFKA_LOCAL_DIR=${KAFKA_LOCAL_DIR:-$(pwd)/.kafka-test}
started=""
if [[ -z "${COUPON_TEST_BROKERS:-}" ]]; then
  if command -v java >/dev/null && command -v mvn >/dev/null; then
    if ! kafka status >/dev/null 2>&1; then
      started=yes
      kafka clean >/dev/null
    fi
    if brokers=$(kafka start | tail -n 1); then
      export COUPON_TEST_BROKERS="$brokers"
    elif [[ "${CI:-}" == "true" ]]; then
      echo "test: the local Kafka broker did not start" >&2
      exit 1
    fi
  elif [[ "${CI:-}" == "true" ]]; then
    echo "test: CI=true needs Java and Maven for the real-broker tests" >&2
    exit 1
  else
    echo "test: no java/mvn: the real-broker tests will skip (install Java 17 and Maven, or set COUPON_TEST_BROKERS)" >&2
  fi
fi
stop_broker() { if [[ -n "$started" ]]; then kafka stop || true; fi; }
trap stop_broker EXIT

echo "== producer: vet and tests (brokers: ${COUPON_TEST_BROKERS:-none})"
# The fault suite (cmd/coupon-producer) starts its own Kafka nodes from the
# cached jars: the package takes several minutes, more than go test's
# default 10-minute limit allows for on a loaded machine.
go vet ./... && go test -count=1 -timeout 30m ./...
echo "== deployment: Dockerfile, compose, Helm chart and k8s/ checks"
(cd hack/deploytest && go vet ./... && go test -count=1 ./...)
# The image from the root Dockerfile, built by BuildKit (hack/image/build.sh,
# root, runc and busybox-static; .ci/run builds it first, so here it is the
# cached tarball): its config, a run under runc, a second build from nothing
# with the same digest. The end-to-end tests run their pods from it.
# COUPON_IMAGE_TAR, when set, names a tarball to test instead.
echo "== image: the Dockerfile built by BuildKit, run under runc, rebuilt bit for bit"
if [[ -n "${COUPON_IMAGE_TAR:-}" ]]; then
  echo "test: the image of COUPON_IMAGE_TAR=$COUPON_IMAGE_TAR"
elif tarball=$(hack/image/build.sh | tail -n 1); then
  export COUPON_IMAGE_TAR=$tarball
elif [[ "${CI:-}" == "true" ]]; then
  echo "test: hack/image/build.sh did not build the image" >&2
  exit 1
else
  echo "test: hack/image/build.sh did not build the image: the image tests will skip" >&2
fi
(cd hack/image && go vet ./... && go test -count=1 -timeout 30m ./...)
# Third-party checkers (kube-score, checkov, kubeconform, chart-testing's
# yamllint and yamale rules, promtool, actionlint), built by hack/chartcheck/tools.sh
# (.ci/run builds them); without them the checks skip and say so, except
# with CI=true.
echo "== chart: third-party checks and the alerts' rule tests"
if [[ -f "$(hack/chartcheck/tools.sh --print-dir)/.stamp" || "${CI:-}" == "true" ]]; then
  hack/chartcheck/run.sh
else
  echo "test: the chart checkers are not built: run hack/chartcheck/tools.sh (a few minutes once)" >&2
fi
# Needs the binaries hack/kube/build.sh builds (.ci/run builds them) and
# root; without them the tests skip and say why, except with CI=true.
echo "== kubernetes: a real node (kubelet, containerd, runc), the chart and the producer's image end to end"
COUPON_KUBE_BIN=$(hack/kube/build.sh --print-dir)
export COUPON_KUBE_BIN
(cd hack/e2e && go vet ./... && go test -count=1 -timeout 30m ./...)
