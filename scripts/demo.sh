#!/usr/bin/env bash
# Install the service into .venv, start it on loopback and drive a multi-turn dialogue through it.
# Offline by default (tiny random-weight models, rule-based planner); configure STUDIO_* for real ones.
set -euo pipefail
case "${1:-}" in
-h | --help)
    # answered before anything is installed
    cat <<'USAGE'
usage: bash scripts/demo.sh [OPTIONS]

Installs the service into .venv (once), then runs `studio demo OPTIONS`: starts the service on loopback
and drives a scripted multi-turn dialogue through the SDK. Offline by default (tiny random-weight models,
rule-based planner). Leaves the images, contact-sheet.png and summary.json in --out (default demo-output),
the demo's database in OUT/data.

options of `studio demo`:
  --out PATH      where images, data and summary.json go (default demo-output)
  --steps N       denoising steps per turn (default 10; the other step counts follow)
  --size N        canvas side in pixels, a multiple of 8 (default by preset)
  --preset NAME   model preset (default from the settings: tiny)
  --turns N       how many turns of the scripted dialogue to run
  --mechanisms L  comma-separated consistency mechanisms (docs/mechanisms.md)
environment: PYTHON picks the interpreter that creates .venv (default python3); STUDIO_* configure the service.
USAGE
    exit 0
    ;;
esac
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[all]"
exec .venv/bin/studio demo "$@"
