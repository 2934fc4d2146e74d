#!/usr/bin/env bash
# Install everything the tests need into .venv (CPU torch 2.13.0), then lint and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[all,dev]"
.venv/bin/ruff check .
# pytest exits 5 when it collects no test: with `set -e` that fails this script, as it should.
.venv/bin/python -m pytest "$@"
