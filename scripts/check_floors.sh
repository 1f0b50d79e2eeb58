#!/usr/bin/env bash
# Check the dependency floors: a fresh virtualenv with the LOWEST version each `name>=X` in requirements.txt
# allows (installed as name==X, wheels only), then the fast tests. Not run by CI (it downloads a lot and
# takes a while); run it after changing a floor or a newer API use. Except: torch/torchvision are installed at
# TORCH/TORCHVISION (default: the builds these machines ship, 2.14.1/0.29.1; no other build installs here).
# Usage: bash scripts/check_floors.sh [python3] [venv dir, default /tmp/venv-low]
set -euo pipefail
py=${1:-python3}; venv=${2:-/tmp/venv-low}
cd "$(dirname "$0")/.."
torch=${TORCH:-2.14.1}; torchvision=${TORCHVISION:-0.29.1}
low=$(mktemp)
trap 'rm -f "$low"' EXIT
# requirements.txt's floors, as exact pins (a line without >= is an error: every dependency needs a floor)
"$py" - requirements.txt "$torch" "$torchvision" > "$low" <<'PY'
import re, sys
path, torch, tv = sys.argv[1:4]
for line in open(path):
    spec = line.split("#", 1)[0].strip()
    if not spec:
        continue
    m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([^,\s]+)", spec)
    if not m:
        sys.exit(f"no floor (>=) in requirements.txt line: {spec}")
    name, floor = m.groups()
    floor = {"torch": torch, "torchvision": tv}.get(name.lower(), floor)
    print(f"{name}=={floor}")
PY
# the test tools at the versions requirements-dev.txt pins
grep -E '^(pytest|pytest-timeout)==' requirements-dev.txt >> "$low"
echo "== floors:"; tr '\n' ' ' < "$low"; echo
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet --only-binary=:all: -r "$low"
"$venv/bin/python" -m pip check || true
echo "== fast tests with the floors"
time "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow and not browser and not shared"
