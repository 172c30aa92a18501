#!/usr/bin/env bash
# The main job on a laptop: sample files, a broker, the producer, the counts.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data/coupons}
DEMO_LINES=${DEMO_LINES:-3000000}

bin/coupongen -dir "$DATA" -lines "$DEMO_LINES"

if [[ -z "${KAFKA_BROKERS:-}" ]]; then
  KAFKA_BROKERS=$(go run ./hack/kafkactl start | tail -n 1)
  echo "demo: local Kafka broker on $KAFKA_BROKERS (stop it with: make kafka-down)" >&2
fi
export KAFKA_BROKERS

files=("$DATA"/couponbase1.gz "$DATA"/couponbase2.gz "$DATA"/couponbase3.gz)
status=0
bin/coupon-producer --log-format console "${files[@]}" || status=$?

echo "Records per topic, read back from Kafka at $KAFKA_BROKERS:"
bin/topiccount couponbase1.gz couponbase2.gz couponbase3.gz || status=1
exit "$status"
