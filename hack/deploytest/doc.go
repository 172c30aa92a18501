// Package deploytest checks the coupon pipeline's deployment files without a
// Docker engine or a cluster: docker-compose.pipeline.yaml is loaded with
// compose-go, the library the docker compose CLI uses; the producer's
// Dockerfile and .dockerignore are read with BuildKit's own parser, linter
// and pattern matcher; the Helm chart is linted and rendered with Helm's Go
// SDK, every object decoded strictly into the Kubernetes API types and every
// pod evaluated with the Pod Security admission checks; the manifests of k8s/
// and hack/kind.sh are checked against the chart's kind values. The package
// has only tests; it is a separate module so that these dependencies stay out
// of the producer's go.mod.
package deploytest
