// Package e2e holds the end-to-end tests that run against a real
// Kubernetes control plane (package cluster) with a test kubelet (package
// kubelet): the harness's own proofs with plain manifests, and the chart and
// the producer with the real controllers and a real Kafka broker.
//
// Run them with `go test ./...` in this folder, as root, after
// hack/kube/build.sh has built the binaries (or with COUPON_KUBE_BIN naming
// them); without them the tests skip and say so, except with CI=true.
package e2e
