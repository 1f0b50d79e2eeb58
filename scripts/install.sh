#!/usr/bin/env bash
# Create the virtualenv (once) and install a requirements file into it; skipped when nothing changed.
set -euo pipefail
py=${1:-python3}; venv=${2:-.venv}; req=${3:-requirements.txt}
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtualenv $venv"
  "$py" -m venv "$venv"
fi
stamp="$venv/.installed-$(basename "$req")-$(cat requirements*.txt "$0" | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
echo "installing $req into $venv (first time: a few minutes, PyTorch is large)"
"$venv/bin/python" -m pip install --quiet -r "$req"
touch "$stamp"
