#!/usr/bin/env bash
# Lint and run the whole test suite. Pytest's "no tests ran" (exit 5) fails like any error.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q "$@"
