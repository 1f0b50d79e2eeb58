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
# (requirements-dev.txt's floors raise those the tests need, e.g. streamlit's testing API; its == pins stay)
"$py" - requirements.txt requirements-dev.txt "$torch" "$torchvision" > "$low" <<'PY'
import re, sys
runtime, dev, torch, tv = sys.argv[1:5]
pins = {}
for path in (runtime, dev):
    for line in open(path):
        spec = line.split("#", 1)[0].strip()
        if not spec or spec.startswith("-r"):
            continue
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*(>=|==)\s*([^,\s]+)", spec)
        if not m:
            sys.exit(f"no floor (>=) or pin (==) in {path} line: {spec}")
        name, _, version = m.groups()
        pins[name.lower()] = (name, {"torch": torch, "torchvision": tv}.get(name.lower(), version))
for name, version in pins.values():
    if name.lower() not in ("mypy", "playwright", "ruff"):  # tools the fast tests do not run
        print(f"{name}=={version}")
PY
echo "== floors:"; tr '\n' ' ' < "$low"; echo
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet --only-binary=:all: -r "$low"
"$venv/bin/python" -m pip check || true
echo "== fast tests with the floors"
time "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow and not browser and not shared"
