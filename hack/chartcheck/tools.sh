#!/usr/bin/env bash
# Installs the third-party checkers that hack/chartcheck/run.sh runs, each at
# a pinned version, into a cache folder keyed by those versions:
# $HOME/.cache/coupon-producer/chartcheck-<key>/bin (COUPON_CHARTCHECK_BIN
# names another). The Go tools build from the Go module proxy with their own
# go.mod (`go install pkg@version`); yamllint, yamale and checkov come from PyPI into
# a virtualenv beside them, with the package kubernetes-validate for the
# Kubernetes schemas it ships (strict: no unknown fields), made
# self-contained for kubeconform by standalone.py into
# bin/kubernetes-json-schema. A stamp file records what was installed, so a
# second run with the same versions does nothing. `tools.sh --print-dir`
# only prints the folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

KUBE_SCORE_VERSION=v1.20.0
KUBECONFORM_VERSION=v0.8.0
ACTIONLINT_VERSION=v1.7.12
PROMETHEUS_VERSION=v0.316.0 # promtool; the module's v0.x tags are Prometheus 3.x
YAMLLINT_VERSION=1.38.0
YAMALE_VERSION=6.1.0
# Ships the Kubernetes JSON schemas (strict: no unknown fields) that
# kubeconform reads offline; its version is the Kubernetes minor.
KUBERNETES_VALIDATE_VERSION=1.37.0
# Polaris is not served by the Go module proxy; checkov (PyPI) is the second
# policy checker, in a virtualenv of its own (its pins clash with yamllint's).
CHECKOV_VERSION=3.3.30

want="kube-score=$KUBE_SCORE_VERSION kubeconform=$KUBECONFORM_VERSION actionlint=$ACTIONLINT_VERSION"
want+=" promtool=$PROMETHEUS_VERSION yamllint=$YAMLLINT_VERSION yamale=$YAMALE_VERSION"
want+=" kubernetes-validate=$KUBERNETES_VALIDATE_VERSION checkov=$CHECKOV_VERSION $(go env GOVERSION)"
want+=" standalone.py=$(sha256sum "$here/standalone.py" | cut -c1-16)"
# The kinds kubeconform checks: the chart's objects and those of k8s/.
kinds=(cronjob-batch-v1 pod-v1 configmap-v1 serviceaccount-v1 persistentvolumeclaim-v1
  persistentvolume-v1 namespace-v1 service-v1 deployment-apps-v1)
key=$(printf '%s' "$want" | sha256sum | cut -c1-12)
bin=${COUPON_CHARTCHECK_BIN:-$HOME/.cache/coupon-producer/chartcheck-$key/bin}
stamp="$bin/.stamp"
tools=(kube-score kubeconform actionlint promtool yamllint yamale checkov kubernetes-json-schema)

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$bin"
  exit 0
fi

complete() {
  [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] || return 1
  local t
  for t in "${tools[@]}"; do [[ -e "$bin/$t" ]] || return 1; done
}
if complete; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
rm -f "$stamp"
start=$SECONDS
export CGO_ENABLED=0
gobin() { GOBIN="$bin" go install -trimpath -ldflags "-s -w" "$@"; }
gobin "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION"
gobin "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
gobin "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
gobin "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"

venv="$(dirname "$bin")/venv"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
  "yamllint==$YAMLLINT_VERSION" "yamale==$YAMALE_VERSION" \
  "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
ln -sf "$venv/bin/yamllint" "$venv/bin/yamale" "$bin/"
checkov_venv="$(dirname "$bin")/venv-checkov"
rm -rf "$checkov_venv"
python3 -m venv "$checkov_venv"
"$checkov_venv/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
ln -sf "$checkov_venv/bin/checkov" "$bin/"
schemas=$("$venv/bin/python" -c 'import kubernetes_validate, os; print(os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema"))')
rm -rf "$bin/kubernetes-json-schema"
"$venv/bin/python" "$here/standalone.py" "$schemas/v${KUBERNETES_VALIDATE_VERSION}-local-strict" \
  "$bin/kubernetes-json-schema" "${kinds[@]/%/.json}"

echo "$want" >"$stamp"
echo "chartcheck: tools installed in $((SECONDS - start))s" >&2
echo "$bin"
