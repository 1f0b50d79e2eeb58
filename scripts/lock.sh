#!/usr/bin/env bash
# Refresh constraints.txt (the lock file): a fresh virtualenv, every requirements file installed WITHOUT
# constraints (the newest versions the ranges allow), then pip freeze. One lock for runtime, dev and Ray,
# since `make test` installs all three into one .venv: their pins are resolved together and cannot conflict.
# Usage: bash scripts/lock.sh [python3]   (or: make lock). Review the diff, run `make test`, commit.
set -euo pipefail
py=${1:-python3}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --upgrade pip
"$tmp/venv/bin/python" -m pip install --quiet -r requirements-dev.txt -r requirements-ray.txt
{
  echo "# Exact versions of the full resolved set (runtime + dev + Ray) that requirements*.txt install together,"
  echo "# on $("$tmp/venv/bin/python" -c 'import platform; print("CPython", platform.python_version(), platform.machine())'); scripts/install.sh uses it only on this Python:"
  echo "# python $("$tmp/venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  echo "# scripts/install.sh (make run / make test) installs every requirements file with -c constraints.txt, so two"
  echo "# installs a month apart get the same versions. Refresh: make lock (scripts/lock.sh). Do not edit by hand."
  "$tmp/venv/bin/python" -m pip freeze --exclude pip --exclude xray-trainer | LC_ALL=C sort -f
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pins; git diff constraints.txt to review"
