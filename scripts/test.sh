#!/usr/bin/env bash
# The test command: static checks, the layering contract, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
command -v kubectl >/dev/null || { echo "the tests need the real kubectl (v1.32) on PATH" >&2; exit 1; }
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports
exec .venv/bin/pytest -q "$@"
