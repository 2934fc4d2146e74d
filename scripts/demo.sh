#!/usr/bin/env bash
# Install the service into .venv, start it on loopback and drive a multi-turn dialogue through it.
# Offline by default (tiny random-weight models, rule-based planner); configure STUDIO_* for real ones.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[all]"
exec .venv/bin/studio demo "$@"
