#!/usr/bin/env bash
# The test command: bootstrap (idempotent), lint, then the test suite.
#   bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. recipes/setup.sh
"$VOXLM_PY" -m ruff check .
OMP_WAIT_POLICY=PASSIVE "$VOXLM_PY" -m pytest -q "$@"
