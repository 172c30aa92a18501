# syntax=docker/dockerfile:1

# Build: docker build -t coupon-producer:local --build-arg VERSION=1.2.3 .
# The compose file at the repository root builds the same image.

# The compiler runs on the build machine's platform and cross-compiles for
# the target's (TARGETOS/TARGETARCH, set by BuildKit from --platform), so a
# multi-platform build emulates nothing.
FROM --platform=$BUILDPLATFORM golang:1.26-alpine AS build
WORKDIR /src

# Dependencies first: this layer is reused until go.mod or go.sum changes.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go mod download

COPY . .
ARG VERSION=dev
ARG TARGETOS TARGETARCH
# CGO off gives a static binary that runs on distroless/static (no libc).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
        -o /out/coupon-producer ./cmd/coupon-producer

# distroless/static: CA certificates and /etc/passwd, no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot

ARG VERSION=dev
LABEL org.opencontainers.image.title="coupon-producer" \
      org.opencontainers.image.description="Reads gzip files of coupon codes and publishes every code to a Kafka topic named after the file" \
      org.opencontainers.image.source="https://github.com/couponpipeline/coupon-producer" \
      org.opencontainers.image.version="${VERSION}"

COPY --from=build /out/coupon-producer /usr/local/bin/coupon-producer

# No ENV defaults: the environment outranks the config file, so a default
# here would override the file the chart and compose mount at
# /etc/coupon-producer/config.yaml (COUPON_PRODUCER_CONFIG). Coupon files are
# mounted read-only at /data; the job names its file in COUPON_FILE.

# The nonroot user of the base image, spelled numerically so that
# runAsNonRoot checks can verify it without reading /etc/passwd.
USER 65532:65532

ENTRYPOINT ["/usr/local/bin/coupon-producer"]
