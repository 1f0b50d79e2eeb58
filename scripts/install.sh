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
# The lock is resolved on one Python (its "# python X.Y" line); several pins have no wheels for another
# (numpy 2.3+, pandas 3 and scipy 1.16+ need 3.11), so there the ranges alone decide.
lock_py=$(sed -n 's/^# python \([0-9][0-9.]*\)$/\1/p' "$cons")
venv_py=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$lock_py" = "$venv_py" ]; then
  "$venv/bin/python" -m pip install --quiet -r "$req" -c "$cons"
else
  echo "constraints.txt was resolved on Python $lock_py, this is $venv_py: installing the newest versions requirements allow"
  "$venv/bin/python" -m pip install --quiet -r "$req"
fi
touch "$stamp"
