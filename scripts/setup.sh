#!/usr/bin/env bash
# Creates ./.venv and installs pyro-vae with its test tools, pinned by constraints.txt.
# Used by both commands of the README and by .ci/run. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade "pip>=23.2"
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test,tensorboard,docs]"
# Fashion-MNIST's offline source is Debian's dataset-fashion-mnist package, fetched with
# `apt-get download` (no root needed). That needs apt's package lists; refresh them once when we
# can (root) and they are missing. Nothing else here needs apt.
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
   && [ -z "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v -e lock -e partial -e auxfiles)" ]; then
  apt-get update -qq >/dev/null 2>&1 || echo "setup: apt-get update failed; Fashion-MNIST's offline source may be unreachable" >&2
fi
echo "setup: pyro-vae installed in .venv ($(.venv/bin/python -c 'import torch, pyro; print(f"torch {torch.__version__}, pyro {pyro.__version__}")'))"
