#!/usr/bin/env bash
# Set up .venv with the project (the `mofo` command) and its test tools.
# torch is pinned and installed first so that pip never pulls another (multi-GB) build; every
# package the images ship is held to requirements.lock's version (the tests run what they run).
# System tools the tests use (redis-server, Debian's chromium) are installed with apt-get when
# missing and this runs as root; otherwise a note says how, and only the tests needing them fail.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q -c requirements.lock torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -c requirements.lock -e '.[dev]'

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; } \
      || echo "setup: could not install ${missing[*]}; install them (apt-get install ${missing[*]})" >&2
  else
    echo "setup: please install ${missing[*]} (Debian: sudo apt-get install ${missing[*]});" \
      "the Redis and browser tests need them" >&2
  fi
fi
