#!/usr/bin/env bash
# Create the project's Python environment from the lock file (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet uv
fi
# Bytecode compiled once here, as a wheel install does: every `kubi` process would
# otherwise compile its imports again (always, where PYTHONDONTWRITEBYTECODE is set).
uv sync --frozen --quiet --compile-bytecode
.venv/bin/python -m compileall -q -j 0 kubi >/dev/null
