#!/usr/bin/env bash
# Build the modelramp images from the Containerfile, print their sizes, fail over budget, then smoke-test them.
#
#   scripts/build_images.sh                  base, wheels, build and size every target, then smoke, then a tiny
#                                            loadtests/bench_peers.py with its routers from the router image
#   scripts/build_images.sh build TARGET...  base, wheels, build and size these targets only
#   scripts/build_images.sh smoke [--router IMAGE] [--controller IMAGE] [--model IMAGE]
#                                            the smoke run alone (default: the router and controller images this
#                                            script names; the model server from the model image if given)
#   scripts/build_images.sh names            print the image names (repository and tag)
#
# No Docker engine runs here: Debian's buildah builds as root with the vfs driver and chroot isolation, and
# a process started with `buildah run` shares the host's network. The upstream base cannot be pulled either:
# the base is a minimal Debian 12 with python3, made by mmdebstrap once and cached (MODELRAMP_IMAGE_CACHE,
# and as a local image named after a hash of its recipe). Wheels are built on the host from the lock files
# (hashes checked), so the build reaches no network.
#
# Names come from the chart: <image.repository>-<target>:<appVersion> (helm/modelramp/values.yaml, Chart.yaml).
# MODELRAMP_IMAGE_TARGETS (default "router controller model") picks what the default run builds;
# MODELRAMP_BASE_IMAGE (e.g. the official python:3.11-slim-bookworm@sha256:...) replaces the mmdebstrap base;
# MODELS (default models/) is where the smoke run's model server finds a trained model (trained if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}" BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
PY="${PY:-.venv/bin/python}"
CACHE="${MODELRAMP_IMAGE_CACHE:-/var/tmp/modelramp-images}"
WHEELS=build/images/wheels
TARGETS="${MODELRAMP_IMAGE_TARGETS:-router controller model}"

# Uncompressed size budgets in MB (0: printed, not enforced).
budget_mb() {
  case "$1" in
    router) echo 350 ;;
    controller) echo 600 ;;
    *) echo 0 ;;
  esac
}

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

image_name() {  # image_name TARGET -> repository-target:tag, from the chart
  "$PY" - "$1" <<'EOF'
import sys, yaml
values = yaml.safe_load(open("helm/modelramp/values.yaml"))["image"]
tag = values.get("tag") or yaml.safe_load(open("helm/modelramp/Chart.yaml"))["appVersion"]
print(f"{values['repository']}-{sys.argv[1]}:{tag}")
EOF
}

# --- the base: a minimal Debian 12 with python3 (about 100 MB), made once ------------------------------------
BASE_OPTS=(--variant=essential --include=python3,ca-certificates,libstdc++6  # grpcio, numpy and TensorFlow link libstdc++
           --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr  # usr-is-merged instead of usrmerge, which pulls perl
           --aptopt='APT::Install-Recommends "false"'
           --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
           --dpkgopt='path-exclude=/usr/share/locale/*'
           --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright')
BASE_SUITE=bookworm

base_image() {  # prints the base image's name, making it if needed (MODELRAMP_BASE_IMAGE: use that one instead)
  local key name tar ctr
  if [ -n "${MODELRAMP_BASE_IMAGE:-}" ]; then
    echo "$MODELRAMP_BASE_IMAGE"
    return
  fi
  key=$(printf '%s\n' "${BASE_OPTS[@]}" "$BASE_SUITE" | sha256sum | cut -c1-12)
  name="localhost/modelramp-base:$key"
  if buildah inspect --type image "$name" >/dev/null 2>&1; then
    echo "$name"
    return
  fi
  mkdir -p "$CACHE"
  tar="$CACHE/base-$key.tar"
  if [ ! -s "$tar" ]; then
    log "mmdebstrap: a minimal $BASE_SUITE with python3 (about 2 minutes) -> $tar"
    mmdebstrap --quiet "${BASE_OPTS[@]}" "$BASE_SUITE" "$CACHE/base-$key.partial.tar" >&2
    mv "$CACHE/base-$key.partial.tar" "$tar"
  fi
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$tar" / >/dev/null
  buildah commit --quiet --rm "$ctr" "$name" >/dev/null
  log "base image $name ($(image_mb "$name") MB)"
  echo "$name"
}

# --- wheels: exactly the lock's pins (hashes checked), modelramp's own wheel, and pip to install them ----------
pip_quiet() {  # pip without its per-package notes about this machine's extra indexes
  "$PY" -m pip --quiet "$@" 2> >(grep -v '^WARNING: Location .* is ignored' >&2)
}

wheels() {  # wheels TARGET
  local target=$1 dir="$WHEELS/$1" pip_version
  rm -rf "$dir"
  mkdir -p "$dir"
  pip_quiet wheel --no-deps --require-hashes --only-binary :all: -r "requirements/$target.lock" -w "$dir"
  pip_quiet wheel --no-deps --no-build-isolation . -w "$dir"
  pip_version=$("$PY" -m pip --version | cut -d' ' -f2)
  pip_quiet download --no-deps --only-binary :all: "pip==$pip_version" -d "$dir"
}

image_mb() {  # uncompressed size: the sum of the image's layers as stored
  buildah inspect --type image --format '{{.Manifest}}' "$1" |
    "$PY" -c 'import json, sys; print(round(sum(l["size"] for l in json.load(sys.stdin)["layers"]) / 1e6))'
}

build() {  # build TARGET BASE: build, print the size, fail over budget
  local target=$1 base=$2 name mb budget start
  name=$(image_name "$target")
  start=$SECONDS
  wheels "$target"
  log "wheels for $target: $(du -sm "$WHEELS/$target" | cut -f1) MB in $((SECONDS - start)) s"
  start=$SECONDS
  buildah bud --quiet --layers=false --target "$target" --build-arg "BASE=$base" -f Containerfile -t "$name" . >/dev/null
  mb=$(image_mb "$name")
  budget=$(budget_mb "$target")
  log "built $name in $((SECONDS - start)) s"
  if [ "$budget" -gt 0 ]; then
    printf 'image %-10s %-50s %5s MB (budget %s MB)\n' "$target" "$name" "$mb" "$budget"
    [ "$mb" -le "$budget" ] || die "$name is $mb MB, over its budget of $budget MB"
  else
    printf 'image %-10s %-50s %5s MB\n' "$target" "$name" "$mb"
  fi
}

smoke() {  # smoke [--router IMAGE] [--controller IMAGE] [--model IMAGE]: the router image serves, the controller decides
  local router controller model=()
  router=$(image_name router)
  controller=$(image_name controller)
  while [ $# -gt 0 ]; do
    case "$1" in
      --router) router=$2; shift 2 ;;
      --controller) controller=$2; shift 2 ;;
      --model) model=(--model "$2"); shift 2 ;;
      *) die "smoke: unknown argument $1" ;;
    esac
  done
  local models="${MODELS:-models}"
  if [ ! -d "$models/churn" ]; then  # the model server on the host needs one trained version
    log "training one model version into $models (modelramp train)"
    "$PY" -m experiments.cli train --out "$models" --version 2 >&2
  fi
  "$PY" scripts/smoke_images.py --router "$router" --controller "$controller" --models "$models" "${model[@]}"
}

bench_from_image() {  # the router image in loadtests/bench_peers.py (--router-image), at a tiny size: the path its README figures take
  if ! command -v nginx >/dev/null || ! { command -v haproxy || [ -x /usr/sbin/haproxy ]; } >/dev/null; then
    [ "${MODELRAMP_REQUIRE_BINARIES:-0}" = 1 ] && die "bench_peers --router-image needs nginx and haproxy (apt-get install nginx haproxy)"
    log "bench_peers --router-image skipped: nginx or haproxy is not installed"
    return 0
  fi
  local start=$SECONDS
  "$PY" loadtests/bench_peers.py --models "${MODELS:-models}" --router-image "$(image_name router)" --shares 1,100 --rps 40 \
    --seconds 1 --rounds 1 --warmup 0.3 | tail -n 8
  log "bench_peers with the router image ran in $((SECONDS - start)) s"
}

case "${1:-all}" in
  names)
    for t in $TARGETS; do image_name "$t"; done
    exit 0 ;;
esac
command -v buildah >/dev/null || die "buildah is not installed (apt-get install buildah mmdebstrap)"
case "${1:-all}" in
  build)
    shift
    base=$(base_image)
    for t in "$@"; do build "$t" "$base"; done ;;
  smoke)
    shift
    smoke "$@" ;;
  all)
    start=$SECONDS
    base=$(base_image)
    log "base ready in $((SECONDS - start)) s"
    for t in $TARGETS; do build "$t" "$base"; done
    # The images these names had before are dangling now: gigabytes each with the vfs driver.
    buildah rmi --prune >/dev/null 2>&1 || true
    start=$SECONDS
    case " $TARGETS " in
      *" model "*) smoke --model "$(image_name model)" ;;  # the model server from the model image too
      *) smoke ;;
    esac
    log "smoke runs passed in $((SECONDS - start)) s"
    case " $TARGETS " in *" router "*) bench_from_image ;; esac ;;
  *)
    die "unknown step ${1}: all, build TARGET..., smoke, names" ;;
esac
