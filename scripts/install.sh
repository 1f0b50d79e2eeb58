#!/usr/bin/env bash
# Create the virtualenv (once) and install a requirements file into it, with the exact versions of
# constraints.txt (the lock file: the same set on every machine, whenever it is installed); skipped when
# nothing changed. The stamp covers requirements*.txt, constraints.txt and this script, so a changed range or
# lock reinstalls. scripts/lock.sh (make lock) rewrites constraints.txt.
set -euo pipefail
py=${1:-python3}; venv=${2:-.venv}; req=${3:-requirements.txt}
here=$(cd "$(dirname "$0")/.." && pwd)
cons="$here/constraints.txt"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtualenv $venv"
  "$py" -m venv "$venv"
fi
stamp="$venv/.installed-$(basename "$req")-$(cat "$here"/requirements*.txt "$cons" "$0" | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
echo "installing $req into $venv (first time: a few minutes, PyTorch is large)"
"$venv/bin/python" -m pip install --quiet -r "$req" -c "$cons"
touch "$stamp"
