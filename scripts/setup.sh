#!/usr/bin/env bash
# Creates .venv and installs Proconsul from the pinned lock files.
#   scripts/setup.sh         runtime dependencies only
#   scripts/setup.sh --test  plus test, lint and type-check tools
set -euo pipefail
cd "$(dirname "$0")/.."
lock=requirements.lock
[ "${1:-}" = "--test" ] && lock=requirements-dev.lock
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$lock"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
