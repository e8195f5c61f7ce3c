#!/bin/sh
# The fault cases of issue 21 (tests/e2e/checks/fault_check.py) against fresh installs without vLLM:
# a clone of this repository at REF (default HEAD), installed twice from the clone,
#
#   hf-server:  python3 -m venv V && V/bin/pip install torch==2.13.0+cpu -e ".[hf-server]"
#   plain:      python3 -m venv V && V/bin/pip install torch==2.13.0+cpu -e .
#
# every case run with the first, the packaging cases (an openai-server study with a stub, an
# hf-server study) with the second too. Prints the tables in Markdown (what
# reports/fault-check.md holds); exit 0 when every case is clean.
#
#   sh tests/e2e/checks/fault_check.sh [REF] > reports/fault-check.md
#
# The driver and its stub server are this checkout's, whatever REF is, so that an older tuner
# (whose tuner.testing has no hostile modes) is checked with the same cases.
set -eu

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
REF=${1:-HEAD}
STUB="{python} $ROOT/tuner/testing/stub.py"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

git clone -q "$ROOT" "$work/tuner"
git -C "$work/tuner" checkout -q "$REF"
commit=$(git -C "$work/tuner" rev-parse --short HEAD)

install() { # $1: the install's name, $2: what pip installs
    start=$(date +%s)
    python3 -m venv "$work/$1"
    (cd "$work/tuner" && "$work/$1/bin/pip" install -q "torch==2.13.0+cpu" -e "$2") >&2
    end=$(date +%s)
    if "$work/$1/bin/python" -c "import vllm" 2>/dev/null; then
        echo "the $1 install has vLLM" >&2
        exit 1
    fi
    echo "- \`$1\`: \`pip install torch==2.13.0+cpu -e \"$2\"\` in $((end - start)) s, no vLLM"
}

echo "# Fault check (issue 21)"
echo
echo "\`sh tests/e2e/checks/fault_check.sh $REF\` on $(date -u +%Y-%m-%d), tuner at $commit, from a"
echo "fresh clone, on $(nproc) cores. Installs:"
echo
install hf-server ".[hf-server]"
install plain "."
echo
echo "A case is clean when it exits as expected, prints no traceback, leaves no process it"
echo "started alive and leaves no file it should not (a temporary, a torn line, a file written"
echo "for bad input, a marker written by code that should never run). A failed \`bench\` keeps"
echo "its worker log in /tmp, whose path its error names; that is not counted."
echo
status=0
echo "## Every case, with the \`hf-server\` install"
echo
(cd "$work/tuner" && "$work/hf-server/bin/python" "$ROOT/tests/e2e/checks/fault_check.py" \
    --stub "$STUB" --install hf-server) || status=1
echo
echo "## Packaging, with the \`plain\` install"
echo
(cd "$work/tuner" && "$work/plain/bin/python" "$ROOT/tests/e2e/checks/fault_check.py" \
    --stub "$STUB" --install plain --only "openai-server study" "hf-server study") || status=1
exit $status
