// Package deploytest checks the coupon pipeline's deployment files without a
// Docker engine: docker-compose.pipeline.yaml is loaded with compose-go, the
// library the docker compose CLI uses, and the producer's Dockerfile and
// .dockerignore are read with BuildKit's own parser, linter and pattern
// matcher. The package has only tests; it is a separate module so that these
// dependencies stay out of the producer's go.mod.
package deploytest
