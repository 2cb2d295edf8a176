#!/usr/bin/env bash
# The test command: bootstrap (idempotent), lint, then the test suite.
#   bash tests/run.sh [pytest args...]
# Tests marked `slow` (both recipes, stages 0-7, at tiny size: ~5 and ~4 min on
# 2 cores) run too; VOXLM_FAST=1 skips them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. recipes/setup.sh
"$VOXLM_PY" -m ruff check .
marker=()
[ "${VOXLM_FAST:-0}" = 1 ] && marker=(-m "not slow")
OMP_WAIT_POLICY=PASSIVE "$VOXLM_PY" -m pytest -q ${marker[@]+"${marker[@]}"} "$@"
