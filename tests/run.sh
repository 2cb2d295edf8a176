#!/usr/bin/env bash
# The test command: bootstrap (idempotent), lint, then the test suite.
#   bash tests/run.sh [pytest args...]
# Tests marked `slow` (the whole toy recipe at tiny size, ~10 min on 2 cores)
# are skipped unless VOXLM_SLOW=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. recipes/setup.sh
"$VOXLM_PY" -m ruff check .
marker=(-m "not slow")
[ "${VOXLM_SLOW:-0}" = 1 ] && marker=()
OMP_WAIT_POLICY=PASSIVE "$VOXLM_PY" -m pytest -q ${marker[@]+"${marker[@]}"} "$@"
