#!/usr/bin/env bash
# Builds the binaries the end-to-end tests in hack/e2e run: kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet and kubectl from
# k8s.io/kubernetes, etcd from
# go.etcd.io/etcd/server/v3 (versions pinned in this folder's go.mod) and the
# helm CLI, all from the Go module proxy. Kubernetes publishes no server
# binaries to a registry we can use, but its source builds as a module.
#
# The binaries go to a cache folder keyed by the Kubernetes version,
# $HOME/.cache/coupon-producer/kube-<version>/bin unless COUPON_KUBE_BIN names
# another; a stamp file there records what was built, so a second run with the
# same versions does nothing. The last line printed is the bin folder;
# `build.sh --print-dir` only prints it, building nothing.
#
# A cold build takes several minutes on 2 cores (kube-apiserver dominates);
# later runs reuse the Go build cache and the stamp.
set -euo pipefail
cd "$(dirname "$0")"

HELM_VERSION=v3.22.0

kube_version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
etcd_version=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
bin=${COUPON_KUBE_BIN:-$HOME/.cache/coupon-producer/kube-$kube_version/bin}
stamp="$bin/.stamp"
want="kubernetes=$kube_version etcd=$etcd_version helm=$HELM_VERSION $(go env GOVERSION) $(sha256sum go.sum | cut -c1-16)"
tools=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd helm)

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$bin"
  exit 0
fi

complete() {
  [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] || return 1
  local t
  for t in "${tools[@]}"; do [[ -x "$bin/$t" ]] || return 1; done
}

if complete; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
rm -f "$stamp"

# The version the server reports (/version, `kubectl version`): Helm checks a
# chart's kubeVersion against it, and an unset one reads v0.0.0. client-go
# keeps its own copy, which kubectl and Helm consult as the client's version.
minor=${kube_version#v*.}
minor=${minor%%.*}
major=${kube_version#v}
major=${major%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

start=$SECONDS
echo "kube: building kubernetes $kube_version, etcd $etcd_version, helm $HELM_VERSION into $bin" >&2
export CGO_ENABLED=0
go build -trimpath -ldflags "$ldflags" -o "$bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kubectl
go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
# Outside this module: `go install pkg@version` builds Helm with its own
# go.mod, as its release does.
GOBIN="$bin" go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

echo "$want" >"$stamp"
echo "kube: built in $((SECONDS - start))s" >&2
echo "$bin"
