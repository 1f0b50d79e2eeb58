#!/usr/bin/env bash
# Headless Chromium for the browser tests (Debian's package; never `playwright install`, which downloads
# a browser build and fails offline). Does nothing when Chromium is already there. Non-interactive as root
# (or with passwordless sudo). Never fails the build itself: when Chromium cannot be installed the browser
# tests skip with the reason, except under CI=true, where they fail and say what is missing.
set -uo pipefail

found() {
  for exe in /usr/bin/chromium /usr/bin/chromium-browser; do
    if [ -x "$exe" ]; then echo "$exe"; return 0; fi
  done
  return 1
}

if exe=$(found); then
  echo "chromium for browser tests: $exe"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: no apt-get here; install Chromium (/usr/bin/chromium) yourself to run the browser tests"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "warning: not root and no passwordless sudo; run 'sudo apt-get install -y chromium' for the browser tests"
    exit 0
  fi
fi
apt() {
  ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a apt-get -y -q \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

log=$(mktemp)
echo "installing chromium for browser tests (apt-get)"
apt update >"$log" 2>&1 || echo "warning: apt-get update failed; trying the install anyway"
for pkg in chromium chromium-browser; do
  if apt install "$pkg" >>"$log" 2>&1 && exe=$(found); then
    echo "chromium for browser tests: $exe ($("$exe" --version 2>/dev/null | head -n1))"
    rm -f "$log"
    exit 0
  fi
done
echo "warning: could not install chromium; browser tests will be skipped (or fail under CI). apt-get said:"
tail -n 20 "$log"
rm -f "$log"
exit 0
