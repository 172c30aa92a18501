// Package e2e holds the end-to-end tests that run against a real
// single-node Kubernetes (package cluster: the control plane, a kubelet on
// containerd and runc, a Kafka broker on the pods' bridge): the Kubernetes
// behaviour the chart relies on with plain manifests, and the chart with
// the producer's image built from the Dockerfile.
//
// Run them with `go test ./...` in this folder, as root, after
// hack/kube/build.sh has built the binaries (or with COUPON_KUBE_BIN naming
// them) and with COUPON_IMAGE_TAR naming the image's tarball; without them
// the tests skip and say so, except with CI=true.
package e2e
