#!/usr/bin/env bash
# Install everything the tests need into .venv (CPU torch 2.13.0), then lint and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[all,dev]"
# the browser tests (tests/browser) drive Debian's Chromium; install it when it is missing
if [ ! -x /usr/bin/chromium ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi
.venv/bin/ruff check .
# pytest exits 5 when it collects no test: with `set -e` that fails this script, as it should.
.venv/bin/python -m pytest "$@"
