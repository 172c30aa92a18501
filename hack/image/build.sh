#!/usr/bin/env bash
# Builds the producer's image from the root Dockerfile, unmodified, with
# BuildKit, on a machine without a Docker engine or a registry, into an OCI
# image tarball whose image is named ghcr.io/couponpipeline/coupon-producer:e2e
# (`ctr images import` names it so).
#
#   build.sh                       build (or reuse) the image; the last line
#                                  printed is the tarball's path
#   build.sh --print-path          print that path, building nothing
#   build.sh --check-reproducible  build it again with a fresh BuildKit state
#                                  and no cache, and fail unless the manifest
#                                  digest is the same bit for bit
#   build.sh --platform linux/arm64 --out FILE
#                                  build for another platform into FILE
#                                  (cross-compiled; not cached)
#
# buildkitd and buildctl are built from the github.com/moby/buildkit module
# source (the Go module proxy serves it; `go install pkg@version` refuses its
# go.mod's exclude block) into $HOME/.cache/coupon-producer/buildkit-<version>.
# The Dockerfile's two base images come from no registry: the stand-ins that
# ./cmd/standins writes (see standin/standin.go) are handed to BuildKit as
# named contexts from OCI layouts. buildkitd runs as root with the OCI worker
# on runc and the host network, which `go mod download` needs to reach the Go
# module proxy; it has its own root and socket and stops when the build ends.
#
# SOURCE_DATE_EPOCH is the commit time and rewrite-timestamp=true clamps
# every file time to it, so the same commit gives the same image digest. The
# tarball is cached under $HOME/.cache/coupon-producer/image/, keyed by the
# source tree (HEAD's tree plus a hash of uncommitted changes), the commit
# time, the version, BuildKit's version and the stand-ins' inputs.
#
# Needs root, runc, Debian's busybox-static (COUPON_BUSYBOX names another
# static busybox) and the CA bundle; VERSION overrides the version stamped
# into the binary and its label (default: git describe, as the Makefile).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

BUILDKIT_VERSION=v0.34.2
IMAGE_NAME=ghcr.io/couponpipeline/coupon-producer:e2e

if [[ -z "${HOME:-}" ]]; then
  HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
  export HOME
fi
cache=$HOME/.cache/coupon-producer
bkdir=$cache/buildkit-$BUILDKIT_VERSION
imgdir=$cache/image

mode=build
platform=""
out=""
while (($#)); do
  case "$1" in
    --print-path) mode=print ;;
    --check-reproducible) mode=check ;;
    --platform) platform=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "image: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [[ -n "$platform" && -z "$out" ]]; then
  echo "image: --platform needs --out FILE" >&2
  exit 2
fi

busybox=${COUPON_BUSYBOX:-/bin/busybox}
ca=/etc/ssl/certs/ca-certificates.crt
goroot=$(go env GOROOT)

# The source as BuildKit will see it: the committed tree plus whatever is
# changed or untracked (not ignored) in the work tree.
source_key() {
  cd "$root"
  {
    git rev-parse 'HEAD^{tree}'
    git diff HEAD --binary
    git ls-files --others --exclude-standard -z | sort -z | xargs -0 -r sha256sum
  } | sha256sum | cut -c1-16
}
epoch=$(cd "$root" && git log -1 --format=%ct)
version=${VERSION:-$(cd "$root" && git describe --tags --always --dirty 2>/dev/null || echo dev)}
standin_key=$(
  {
    go env GOVERSION
    echo "$goroot"
    sha256sum "$busybox" "$ca" 2>/dev/null || echo "missing $busybox or $ca"
    cd "$here" && ls standin/*.go cmd/standins/*.go | grep -v '_test\.go$' | xargs cat go.sum
  } | sha256sum | cut -c1-16
)
key=$(
  {
    echo "src=$(source_key) epoch=$epoch version=$version buildkit=$BUILDKIT_VERSION standins=$standin_key"
    cat "$here/build.sh"
  } | sha256sum | cut -c1-16
)
tar_path=$imgdir/$key/coupon-producer.tar

if [[ $mode == print ]]; then
  echo "$tar_path"
  exit 0
fi

if [[ ! -x "$busybox" ]]; then
  echo "image: $busybox is missing (Debian package busybox-static)" >&2
  exit 1
fi
if [[ ! -f "$ca" ]]; then
  echo "image: $ca is missing (Debian package ca-certificates)" >&2
  exit 1
fi
if ! runc=$(command -v runc); then
  echo "image: runc is missing (Debian package runc)" >&2
  exit 1
fi
if [[ $(id -u) != 0 ]]; then
  echo "image: buildkitd runs containers with runc and needs root" >&2
  exit 1
fi

mkdir -p "$imgdir"
# One build at a time per cache: they share the stand-ins and the tarballs.
exec 9>"$imgdir/.lock"
flock 9

# buildkitd and buildctl, once per BuildKit version.
build_buildkit() {
  local want="buildkit=$BUILDKIT_VERSION $(go env GOVERSION)"
  if [[ -x "$bkdir/bin/buildkitd" && -x "$bkdir/bin/buildctl" && "$(cat "$bkdir/bin/.stamp" 2>/dev/null)" == "$want" ]]; then
    return
  fi
  local src start=$SECONDS
  src=$(cd "$here" && go mod download -json "github.com/moby/buildkit@$BUILDKIT_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  if [[ -z "$src" ]]; then
    echo "image: go mod download github.com/moby/buildkit@$BUILDKIT_VERSION gave no source folder" >&2
    exit 1
  fi
  echo "image: building buildkitd and buildctl $BUILDKIT_VERSION into $bkdir/bin" >&2
  mkdir -p "$bkdir/bin"
  rm -f "$bkdir/bin/.stamp"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/moby/buildkit/version.Version=$BUILDKIT_VERSION" \
    -o "$bkdir/bin/" ./cmd/buildkitd ./cmd/buildctl)
  echo "$want" >"$bkdir/bin/.stamp"
  echo "image: buildkit built in $((SECONDS - start))s" >&2
}

# The stand-in base images as OCI layouts, once per set of inputs.
standins=$imgdir/standins-$standin_key
make_standins() {
  if [[ -f "$standins/digests" ]]; then
    return
  fi
  # Stand-ins of other inputs (another Go, another CA bundle) are stale.
  rm -rf "$standins" "$imgdir"/standins-*
  mkdir -p "$standins"
  (cd "$here" && go run ./cmd/standins -out "$standins" -goroot "$goroot" -busybox "$busybox" -ca "$ca") >"$standins/digests.tmp"
  mv "$standins/digests.tmp" "$standins/digests"
}
standin_digest() { awk -v n="$1" '$1 == n { print $2 }' "$standins/digests"; }

bkpid=""
bkstate=""
stop_buildkitd() {
  if [[ -n "$bkpid" ]]; then
    kill "$bkpid" 2>/dev/null || true
    wait "$bkpid" 2>/dev/null || true
    bkpid=""
  fi
  if [[ -n "$bkstate" ]]; then
    # A buildkitd that died hard can leave its snapshots mounted.
    grep -o " $bkstate/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$bkstate"
    bkstate=""
  fi
}
trap stop_buildkitd EXIT

# Starts a buildkitd with a state folder of its own and waits until it
# answers. The host network: without it BuildKit would set up a bridge with
# masquerading for each RUN; here RUN only needs the Go module proxy.
start_buildkitd() {
  bkstate=$(mktemp -d "${TMPDIR:-/tmp}/cpimg-buildkit.XXXXXX")
  "$bkdir/bin/buildkitd" --root "$bkstate/root" --addr "unix://$bkstate/buildkitd.sock" \
    --oci-worker=true --containerd-worker=false --oci-worker-net=host \
    --oci-worker-binary="$runc" \
    >"$bkstate/buildkitd.log" 2>&1 &
  bkpid=$!
  local i
  for i in $(seq 1 120); do
    if "$bkdir/bin/buildctl" --addr "unix://$bkstate/buildkitd.sock" debug workers >/dev/null 2>&1; then
      return
    fi
    if ! kill -0 "$bkpid" 2>/dev/null; then
      break
    fi
    sleep 0.5
  done
  echo "image: buildkitd did not answer; its log:" >&2
  cat "$bkstate/buildkitd.log" >&2
  exit 1
}

# build DEST [PLATFORM]: one build of the Dockerfile into the OCI tarball DEST.
build() {
  local dest=$1 plat=${2:-}
  local gdigest ddigest
  gdigest=$(standin_digest golang)
  ddigest=$(standin_digest distroless)
  local args=(
    --frontend dockerfile.v0
    --local "context=$root" --local "dockerfile=$root"
    # Offline the "# syntax=" line would pull the frontend image; naming it
    # here makes the built-in frontend do the build.
    --opt cmdline=docker/dockerfile:1
    --oci-layout "golang=$standins/golang"
    --opt "context:golang:1.26-alpine=oci-layout://golang@$gdigest"
    --oci-layout "distroless=$standins/distroless"
    --opt "context:gcr.io/distroless/static-debian12:nonroot=oci-layout://distroless@$ddigest"
    --opt "build-arg:VERSION=$version"
    --opt "build-arg:SOURCE_DATE_EPOCH=$epoch"
    --output "type=oci,dest=$dest.tmp,name=$IMAGE_NAME,rewrite-timestamp=true"
    --progress plain
  )
  if [[ -n "$plat" ]]; then
    args+=(--opt "platform=$plat")
  fi
  local start=$SECONDS
  echo "image: building $IMAGE_NAME (version $version, SOURCE_DATE_EPOCH $epoch${plat:+, $plat})" >&2
  SOURCE_DATE_EPOCH=$epoch "$bkdir/bin/buildctl" --addr "unix://$bkstate/buildkitd.sock" build "${args[@]}" >&2
  mv "$dest.tmp" "$dest"
  echo "image: built $dest in $((SECONDS - start))s ($(du -h "$dest" | cut -f1))" >&2
}

# manifest_digest TAR: the digest that index.json of the tarball names.
manifest_digest() {
  tar -xOf "$1" index.json | grep -o '"digest":"sha256:[0-9a-f]*"' | head -n1 | cut -d'"' -f4
}

build_buildkit
make_standins

if [[ -n "$platform" ]]; then
  start_buildkitd
  build "$out" "$platform"
  stop_buildkitd
  echo "$out"
  exit 0
fi

if [[ ! -f "$tar_path" ]]; then
  mkdir -p "$(dirname "$tar_path")"
  start_buildkitd
  build "$tar_path"
  stop_buildkitd
fi

if [[ $mode == check ]]; then
  second=$(mktemp -d "${TMPDIR:-/tmp}/cpimg-repro.XXXXXX")
  start_buildkitd
  build "$second/coupon-producer.tar"
  stop_buildkitd
  first_digest=$(manifest_digest "$tar_path")
  second_digest=$(manifest_digest "$second/coupon-producer.tar")
  first_sum=$(sha256sum <"$tar_path" | cut -d' ' -f1)
  second_sum=$(sha256sum <"$second/coupon-producer.tar" | cut -d' ' -f1)
  rm -rf "$second"
  echo "image: manifest $first_digest (cached build), $second_digest (fresh build); tarball sha256 $first_sum, $second_sum" >&2
  if [[ -z "$first_digest" || "$first_digest" != "$second_digest" ]]; then
    echo "image: not reproducible: the two builds differ" >&2
    exit 1
  fi
fi
echo "$tar_path"
