#!/bin/sh
# The CI container, built and run as a CI job would run it: the CPU image from the Dockerfile,
# `tuner ci` in it with a work folder mounted at /work holding the config and a copy of the
# committed CPU profile. Checks: exit 0 while the profile holds, exit 3 once the profile is edited
# to claim 100x its throughput, the summary and JUnit file on the host side, the run directory,
# and no download at run time (HF_HUB_OFFLINE=1 in the image; the model is synthesized).
#
#   sh tests/e2e/checks/container_check.sh
#
# Machine settings come from the environment, never from the Dockerfile:
#   CONTAINER        podman (default) or docker
#   CONTAINER_FLAGS  global flags of the container command (this CI machine: --runtime runc
#                    --cgroup-manager=cgroupfs, with CONTAINERS_CONF naming a containers.conf
#                    that holds `[containers]` and `default_ulimits = []`)
#   BUILD_FLAGS      extra `build` flags (this machine: --network=host, its CA bundle mounted
#                    and PIP_CERT set; PIP_FIND_LINKS with its local wheel folder mounted)
#   RUN_FLAGS        extra `run` flags
#   BASE             the CPU base image (default python:3.11-slim-bookworm)
#   TORCH_INDEX      where the CPU torch wheel is found (default PyTorch's CPU index; empty:
#                    PyPI and PIP_FIND_LINKS only)
set -eu

CONTAINER=${CONTAINER:-podman}
CONTAINER_FLAGS=${CONTAINER_FLAGS:-}
BUILD_FLAGS=${BUILD_FLAGS:-}
RUN_FLAGS=${RUN_FLAGS:-}
BASE=${BASE:-python:3.11-slim-bookworm}
IMAGE=tuner-ci-cpu
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
PROFILE=profiles/cpu/hf/synthetic-tiny-llama--humaneval-64x16.json

if ! command -v "$CONTAINER" >/dev/null 2>&1; then
    echo "skipped: no $CONTAINER here"
    exit 0
fi

start=$(date +%s)
# shellcheck disable=SC2086
"$CONTAINER" $CONTAINER_FLAGS build $BUILD_FLAGS -t "$IMAGE" \
    --build-arg BASE="$BASE" --build-arg VENV=/opt/venv \
    --build-arg EXTRA="torch==2.13.0+cpu" \
    --build-arg PIP_EXTRA_INDEX_URL="${TORCH_INDEX-https://download.pytorch.org/whl/cpu}" "$ROOT"
end=$(date +%s)
# shellcheck disable=SC2086
size=$("$CONTAINER" $CONTAINER_FLAGS image inspect --format '{{.Size}}' "$IMAGE")
echo "built $IMAGE on $BASE in $((end - start)) s, $((size / 1048576)) MiB"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/$(dirname "$PROFILE")"
cp "$ROOT/$PROFILE" "$work/$PROFILE"
cat >"$work/tuner-ci.yaml" <<EOF
engine: hf
model: synthetic:tiny-llama
workload: humaneval
requests: 64
output_tokens: 16
job: bench
tolerance: 0.5
profile: $PROFILE
protocol: {repeats: 3, max_remeasures: 0}
summary: out/tuner-ci.md
junit: out/tuner-ci.xml
EOF

ci() { # $1: run directory name; prints the exit code
    # shellcheck disable=SC2086
    "$CONTAINER" $CONTAINER_FLAGS run --rm $RUN_FLAGS -v "$work:/work" "$IMAGE" \
        --config tuner-ci.yaml >"$work/$1.log" 2>&1 && echo 0 || echo $?
}

held=$(ci held)
echo "held profile: exit $held"; head -3 "$work/out/tuner-ci.md"
[ "$held" = 0 ] || { cat "$work/held.log"; echo "FAIL: expected exit 0"; exit 1; }
grep -q 'failures="0"' "$work/out/tuner-ci.xml" || { echo "FAIL: JUnit"; exit 1; }
ls -d "$work"/runs/ci-* >/dev/null || { echo "FAIL: no run directory"; exit 1; }

# The same profile, claiming 100x its throughput: a regression.
python3 - "$work/$PROFILE" <<'EOF'
import json, sys
path = sys.argv[1]
data = json.load(open(path))
for run in data["best"]["measurement"]["runs"]:
    run["elapsed_s"] /= 100
json.dump(data, open(path, "w"))
EOF
regressed=$(ci regressed)
echo "regressed profile: exit $regressed"; head -3 "$work/out/tuner-ci.md"
[ "$regressed" = 3 ] || { cat "$work/regressed.log"; echo "FAIL: expected exit 3"; exit 1; }
grep -q 'failures="1"' "$work/out/tuner-ci.xml" || { echo "FAIL: JUnit"; exit 1; }
echo "container check passed"
