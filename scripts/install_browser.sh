#!/usr/bin/env bash
# Headless Chromium for the browser tests (Debian's package; never `playwright install`).
# Skips quietly when Chromium is already there; when it cannot be installed the browser tests skip.
set -uo pipefail
for exe in /usr/bin/chromium /usr/bin/chromium-browser; do
  [ -x "$exe" ] && exit 0
done
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
  echo "installing chromium for browser tests (apt)"
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
    || echo "warning: could not install chromium; browser tests will be skipped"
else
  echo "warning: no apt-get; install Chromium yourself to run the browser tests"
fi
exit 0
