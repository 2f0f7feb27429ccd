#!/usr/bin/env bash
# Regenerate requirements.lock: the project's runtime dependencies (no dev tools) with the pinned
# torch and the gpu extra, resolved in a scratch virtual environment and frozen.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$PYTHON" -m venv "$scratch/venv"
pip=("$scratch/venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" torch==2.14.1 torchvision==0.29.1
"${pip[@]}" '.[gpu,ops]'
{
  sed -n '/^#/!q;p' requirements.lock  # keep the header comment
  # --all: setuptools too (torch needs it at run time; pip freeze leaves it out by default)
  "$scratch/venv/bin/python" -m pip freeze --all --exclude-editable | grep -v -e '^mofo @' -e '^pip=='
} > "$scratch/lock"
mv "$scratch/lock" requirements.lock
echo "requirements.lock: $(grep -vc '^#' requirements.lock) packages"
