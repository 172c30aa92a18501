# Coupon pipeline. The two commands that matter:
#   make demo   generate sample files, publish them to Kafka, print the counts
#   make test   run every test, a real Kafka broker included
SHELL := /bin/bash
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
DATA ?= data/coupons
DEMO_LINES ?= 3000000

.PHONY: all build image demo test test-unit test-e2e kube-bin fuzz bench kafka-up kafka-down kafka-clean clean

all: build

build:
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN)/coupon-producer ./cmd/coupon-producer
	go build -trimpath -o $(BIN)/coupongen ./cmd/coupongen
	go build -trimpath -o $(BIN)/topiccount ./cmd/topiccount

# The container image from the Dockerfile: docker build where a Docker engine
# answers; elsewhere BuildKit built from source with stand-in base images
# (hack/image/build.sh, root), into an OCI tarball whose path it prints last
# (`ctr -n k8s.io images import` loads it into containerd).
IMAGE ?= ghcr.io/couponpipeline/coupon-producer:$(VERSION)
image:
	@if docker info >/dev/null 2>&1; then \
	  docker build -t $(IMAGE) --build-arg VERSION=$(VERSION) . ; \
	else \
	  echo "image: no Docker engine; building with BuildKit (hack/image/build.sh)" >&2; \
	  VERSION=$(VERSION) bash hack/image/build.sh; \
	fi

# Generates couponbase1..3.gz in $(DATA) if absent, starts the local broker
# unless KAFKA_BROKERS is set, publishes the three files and prints each
# topic's record count read back from Kafka.
demo: build
	DATA=$(DATA) DEMO_LINES=$(DEMO_LINES) bash hack/demo.sh

# Every test: unit, fuzz seeds, end-to-end, the real-broker integration,
# fault, secure-cluster and ledger tests (the broker is started unless
# COUPON_TEST_BROKERS is set), the Dockerfile/compose/chart checks and the
# Kubernetes end-to-end tests (binaries from kube-bin; root).
test:
	bash hack/test.sh

# The end-to-end tests on a real single-node Kubernetes (hack/e2e): root,
# the binaries of kube-bin, containerd, runc, the CNI plugins, Java and the
# Kafka jars (the broker runs in a network namespace of the tests), and the
# image built from the Dockerfile (COUPON_IMAGE_TAR, else hack/image/build.sh).
test-e2e:
	cd hack/e2e && COUPON_KUBE_BIN=$$(../kube/build.sh --print-dir) \
	  COUPON_IMAGE_TAR=$${COUPON_IMAGE_TAR:-$$(bash ../image/build.sh | tail -n 1)} \
	  go test -count=1 -timeout 30m ./...

# Builds kube-apiserver, kube-controller-manager, kubectl, etcd and helm from
# the Go module proxy into a cache (about 8 minutes once).
kube-bin:
	bash hack/kube/build.sh

# The tests that need neither Java nor a broker.
test-unit:
	go vet ./... && go test ./...

fuzz:
	go test -run XXX -fuzz FuzzExtract -fuzztime 60s ./pkg/extract

# The end-to-end benchmark (hack/bench; settings in docs/performance.md).
bench: build
	go run ./hack/bench

# The local broker of make demo (hack/kafkactl; settings in `go run
# ./hack/kafkactl help`).
kafka-up:
	go run ./hack/kafkactl start

kafka-down:
	go run ./hack/kafkactl stop

kafka-clean:
	go run ./hack/kafkactl clean

clean:
	rm -rf $(BIN)
