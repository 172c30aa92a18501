#!/usr/bin/env bash
# Checks the chart with third-party tools, as a platform team would before
# letting it into its clusters: helm lint --strict, kube-score, checkov, kubeconform
# (strict, offline schemas of Kubernetes 1.37), chart-testing's yamllint and
# yamale rules, promtool on the alerts, and actionlint on the workflows.
# Every render uses each ci/*-values.yaml in turn. The tools come from
# tools.sh (cached by version), helm from hack/kube/build.sh.
#
# A finding is ignored only below, each with its reason.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=$(hack/chartcheck/tools.sh --print-dir)
helm=$(hack/kube/build.sh --print-dir)/helm
for t in kube-score kubeconform actionlint promtool yamllint yamale checkov; do
  if [[ ! -x "$bin/$t" ]]; then
    echo "chartcheck: $bin/$t is missing: run hack/chartcheck/tools.sh" >&2
    exit 1
  fi
done
[[ -x "$helm" ]] || { echo "chartcheck: $helm is missing: run hack/kube/build.sh" >&2; exit 1; }

chart=charts/coupon-producer
kube_version=1.37.2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=0
step() { echo "-- $*"; }
check() { if ! "$@"; then echo "chartcheck: FAILED: $*" >&2; failed=1; fi; }

step "helm lint --strict"
for f in "$chart"/ci/*-values.yaml; do
  check "$helm" lint --strict --quiet --kube-version "$kube_version" -f "$f" "$chart"
done

step "helm template"
# The helm test pod apart from the rest, for the one kube-score finding
# ignored on it alone (below).
for f in "$chart"/ci/*-values.yaml; do
  name=$(basename "$f" -values.yaml)
  render=("$helm" template coupon-producer "$chart" -n coupons --kube-version "$kube_version" -f "$f")
  "${render[@]}" --skip-tests >"$out/$name.yaml"
  "${render[@]}" --show-only templates/tests/preflight-pod.yaml >"$out/$name.test.yaml" 2>/dev/null || rm -f "$out/$name.test.yaml"
done

step "kube-score"
# Ignored, each with its reason:
# - pod-probes: a Job's pod runs to completion and serves nothing; a
#   liveness probe could only kill a long publish.
# - pod-networkpolicy: the namespace's network policies are the platform's
#   (the producer only dials Kafka and the Pushgateway, whose selectors the
#   chart cannot know).
# - container-image-pull-policy (wants Always): the chart's image is an
#   immutable release tag, pinned by digest in the published chart; Always
#   would make every scheduled run depend on the registry being up.
# - container-ephemeral-storage-request-and-limit: the root filesystem is
#   read-only and the pods have no emptyDir: they write nothing to disk.
ignore=(--ignore-test pod-probes --ignore-test pod-networkpolicy
  --ignore-test container-image-pull-policy
  --ignore-test container-ephemeral-storage-request-and-limit)
score() {
  local log=$out/kube-score.log
  if ! "$bin/kube-score" score --output-format ci "${ignore[@]}" "$@" >"$log"; then
    grep -v '^\[OK\]\|^\[SKIPPED\]' "$log" >&2 || true
    echo "chartcheck: FAILED: kube-score $*" >&2
    failed=1
  fi
}
for f in "$out"/*.yaml; do
  case $(basename "$f") in
    # The helm test pod has no CPU limit on purpose: a short check that
    # must not be throttled into its timeout.
    *.test.yaml) score --ignore-container-cpu-limit "$f" ;;
    # startingDeadlineSeconds: null on purpose: the file tests that null is
    # not rendered (the default renders 3600).
    zero.yaml) score --ignore-test cronjob-has-deadline "$f" ;;
    *) score "$f" ;;
  esac
done
score k8s/data-loader-pod.yaml k8s/data-refresh-cronjob.yaml

step "checkov"
# Skipped, each with its reason:
# - CKV2_K8S_6 (a NetworkPolicy per pod): as pod-networkpolicy above.
# - CKV_K8S_15 (pull policy Always): as container-image-pull-policy above.
# - CKV_K8S_43 (image by digest): the released chart has the digest as its
#   default (the release workflow sets image.digest); the chart in the
#   repository cannot know it before the image is built.
# - on the helm test pod only: CKV_K8S_11 (CPU limit), as for kube-score.
# - on the bare pods (the helm test pod, the loader pod of k8s/): CKV_K8S_8
#   and CKV_K8S_9 (liveness, readiness probes): a pod that runs once (or
#   waits for kubectl cp) serves nothing to probe, and a liveness probe
#   could only kill it.
skip=CKV2_K8S_6,CKV_K8S_15,CKV_K8S_43
mkdir -p "$out/checkov" "$out/checkov-test" "$out/checkov-loader"
cp "$out"/*.test.yaml "$out/checkov-test/"
for f in "$out"/*.yaml; do [[ "$f" == *.test.yaml ]] || cp "$f" "$out/checkov/"; done
cp k8s/data-refresh-cronjob.yaml "$out/checkov/"
cp k8s/data-loader-pod.yaml "$out/checkov-loader/"
checkov() { check "$bin/checkov" --quiet --compact --skip-download --framework kubernetes "$@"; }
checkov --skip-check "$skip" -d "$out/checkov"
checkov --skip-check "$skip,CKV_K8S_8,CKV_K8S_9" -d "$out/checkov-loader"
checkov --skip-check "$skip,CKV_K8S_11,CKV_K8S_8,CKV_K8S_9" -d "$out/checkov-test"

step "kubeconform -strict (Kubernetes $kube_version schemas, offline)"
# PrometheusRule is a CRD without a schema here; hack/deploytest decodes it
# strictly into the Prometheus Operator's Go type instead.
check "$bin/kubeconform" -strict -summary -kubernetes-version "$kube_version" \
  -schema-location "$bin/kubernetes-json-schema/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
  -skip PrometheusRule \
  "$out"/*.yaml k8s/namespace.yaml k8s/data.yaml k8s/kafka.yaml \
  k8s/data-loader-pod.yaml k8s/data-refresh-cronjob.yaml

step "yamllint (chart-testing's lintconf.yaml)"
check "$bin/yamllint" --strict -c hack/chartcheck/ct/lintconf.yaml \
  "$chart/Chart.yaml" "$chart/values.yaml" "$chart"/ci/*-values.yaml

step "yamale (chart-testing's chart_schema.yaml)"
check "$bin/yamale" -s hack/chartcheck/ct/chart_schema.yaml "$chart/Chart.yaml"

step "promtool: the alerts and their tests"
"$helm" template coupon-producer "$chart" -n coupons --kube-version "$kube_version" \
  -f "$chart/ci/metrics-values.yaml" -s templates/prometheusrule.yaml >"$out/rule.yaml"
# The PrometheusRule's spec is a Prometheus rule file.
"$(dirname "$bin")/venv/bin/python" -c '
import sys, yaml
rule = yaml.safe_load(open(sys.argv[1]))
yaml.safe_dump(rule["spec"], open(sys.argv[2], "w"), sort_keys=False)
' "$out/rule.yaml" "$out/coupon-producer.rules.yaml"
cp hack/chartcheck/alerts_test.yaml "$out/"
check "$bin/promtool" check rules "$out/coupon-producer.rules.yaml"
check "$bin/promtool" test rules "$out/alerts_test.yaml"

step "release workflow: its chart step, run on a copy"
# The step that sets the chart's version and image digest is shell that no
# CI here runs: run it as the workflow would (bash -e -o pipefail) on a copy
# of the chart, then check the packaged chart's default image.
"$(dirname "$bin")/venv/bin/python" -c '
import sys, yaml
wf = yaml.safe_load(open(".github/workflows/release.yaml"))
steps = [s for s in wf["jobs"]["chart"]["steps"] if s.get("name") == "Set the chart'"'"'s version and image digest"]
assert len(steps) == 1, "release.yaml: no single step that sets the chart version and digest"
open(sys.argv[1], "w").write(steps[0]["run"])
' "$out/release-chart.sh"
mkdir -p "$out/release"
cp -r charts "$out/release/"
digest=sha256:$(printf 'release dry run' | sha256sum | cut -c1-64)
if (cd "$out/release" && PATH="$(dirname "$helm"):$PATH" IMAGE=ghcr.io/couponpipeline/coupon-producer \
  VERSION=9.8.7 DIGEST="$digest" bash -e -o pipefail "$out/release-chart.sh" >"$out/release.log" 2>&1); then
  image=$("$helm" template r "$out/release/dist/coupon-producer-9.8.7.tgz" --kube-version "$kube_version" \
    --show-only templates/cronjob.yaml | sed -n 's/^ *image: "\(.*\)"$/\1/p' | sort -u)
  want="ghcr.io/couponpipeline/coupon-producer:9.8.7@$digest"
  if [[ "$image" != "$want" ]]; then
    echo "chartcheck: FAILED: the released chart's image is $image, want $want" >&2
    failed=1
  fi
else
  cat "$out/release.log" >&2
  echo "chartcheck: FAILED: the release workflow's chart step" >&2
  failed=1
fi

step "actionlint"
check "$bin/actionlint" -color=false .github/workflows/*.yaml

if ((failed)); then
  echo "chartcheck: some checks failed" >&2
  exit 1
fi
echo "chartcheck: every check passed"
