#!/usr/bin/env bash
# Build the container image with the Dockerfile, start it in hosted mode with a password, and check it for
# real: health, the sign-in page (not the refusal page), one tiny training run inside the container. Prints
# build time, image size, health, sign-in and the run's result; stops and removes the container.
# Needs podman (apt-get install podman), and debootstrap for the base image below. CI does not run this.
#
#   bash scripts/container_smoke.sh
#
# Base image: BASE_IMAGE (default: localhost/xrt-base:bookworm, made here once with debootstrap from Debian's
# package archive and `podman import`ed: Debian bookworm's python3 is 3.11, the Python of constraints.txt, so
# the locked versions are installed). Set BASE_IMAGE=python:3.11-slim-bookworm where a registry is reachable.
#
# THIS MACHINE ONLY (build-time context, not part of the Dockerfile users build): the development machines
# keep torch/torchvision wheels and package indexes on disk (/opt/wheels, /opt/pypi, /opt/pypi-more, named
# by the host's pip config), and its PyPI traffic passes a TLS proxy whose CA is only in the host's bundle.
# When /opt/pypi exists, those folders and the host's CA bundle are mounted read-only into the build's RUN
# steps with a pip.conf that points at them (podman build -v); nothing of them stays in the image. Elsewhere
# pip in the build uses PyPI as usual. SMOKE_LOCAL_PIP=0 turns this off.
# Also for this machine's sandbox: crun fails here (cgroups v1/v2 hybrid; no raising RLIMIT_NPROC), so the
# containers run with runc and explicit ulimits: PODMAN_RUNTIME=crun and ULIMITS="" restore podman's defaults.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
IMAGE=${IMAGE:-localhost/xray-trainer:smoke}
BASE_IMAGE=${BASE_IMAGE:-localhost/xrt-base:bookworm}
NAME=${NAME:-xrt-smoke}
PORT=${PORT:-18501}
PASSWORD=${PASSWORD:-smoke-$RANDOM$RANDOM}
tmp=$(mktemp -d)
cleanup() {
  "${pm[@]}" rm -f "$NAME" "$NAME-nopw" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

say() { printf '== %s\n' "$*"; }
pm=(podman)
runtime=${PODMAN_RUNTIME-$(command -v runc >/dev/null && echo runc)}
[ -n "$runtime" ] && pm+=(--runtime "$runtime")
lim=()
for u in ${ULIMITS-nofile=20000:20000 nproc=4096:4096}; do lim+=(--ulimit "$u"); done

# 1. The base image (once).
if ! podman image exists "$BASE_IMAGE"; then
  if [ "$BASE_IMAGE" != "localhost/xrt-base:bookworm" ]; then
    podman pull "$BASE_IMAGE"
  else
    # Debian bookworm plus a CPython 3.11 in /usr/local, the layout of python:3.11-slim-bookworm. Bookworm's
    # own python3 is 3.11.2, too old for the lock (soupsieve 4.1.4 needs >= 3.11.5); the lock was resolved on
    # CPython 3.11.7, so this machine's 3.11.7 (BASE_PYTHON_PREFIX, its standard library only, no
    # site-packages) is copied in. Without one, bookworm's python3 stays and the build installs without the lock.
    say "making $BASE_IMAGE with debootstrap (Debian bookworm, python3 + venv)"
    root="$tmp/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
      bookworm "$root" http://deb.debian.org/debian >"$tmp/debootstrap.log"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    pyp=${BASE_PYTHON_PREFIX-$(python3 -c 'import sys; print(sys.base_prefix if sys.version_info[:2] == (3, 11) else "")')}
    if [ -n "$pyp" ] && [ -x "$pyp/bin/python3.11" ]; then
      mkdir -p "$root/usr/local/bin" "$root/usr/local/lib"
      cp -a "$pyp/bin/python3.11" "$root/usr/local/bin/"
      ln -sf python3.11 "$root/usr/local/bin/python3"; ln -sf python3 "$root/usr/local/bin/python"
      cp -a "$pyp"/lib/libpython3.11.so* "$root/usr/local/lib/" 2>/dev/null || true
      tar -C "$pyp/lib" -c --exclude='python3.11/site-packages/*' --exclude='__pycache__' \
        --exclude='python3.11/test' python3.11 | tar -C "$root/usr/local/lib" -x
      chroot "$root" ldconfig
    fi
    tar -C "$root" -c . | podman import \
      --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE_IMAGE" >/dev/null
    rm -rf "$root"
  fi
fi
say "base image: $BASE_IMAGE ($("${pm[@]}" run --rm "${lim[@]}" "$BASE_IMAGE" python3 --version))"

# 2. Build. --format docker keeps the HEALTHCHECK (podman's default OCI format drops it).
# NO_CACHE=1: build every layer anew (the build time of a first build).
build_args=(${NO_CACHE:+--no-cache} --format docker "${lim[@]}" --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE")
if [ "${SMOKE_LOCAL_PIP:-1}" = 1 ] && [ -d /opt/pypi ]; then
  cat >"$tmp/pip.conf" <<'CONF'
[global]
find-links = /opt/wheels
extra-index-url = file:///opt/pypi/simple file:///opt/pypi-more/simple
default-timeout = 180
cert = /etc/ssl/host-ca-bundle.crt
CONF
  build_args+=(-v "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/host-ca-bundle.crt:ro")
  build_args+=(-v "$tmp/pip.conf:/etc/pip.conf:ro")
  for d in /opt/wheels /opt/pypi /opt/pypi-more; do [ -d "$d" ] && build_args+=(-v "$d:$d:ro"); done
  say "build: this machine's wheel folders and package indexes mounted read-only (build time only)"
fi
say "building $IMAGE"
t0=$(date +%s)
"${pm[@]}" build "${build_args[@]}" . >"$tmp/build.log" 2>&1 || { tail -40 "$tmp/build.log"; exit 1; }
build_s=$(( $(date +%s) - t0 ))
grep -i "installing without the lock" "$tmp/build.log" || true
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "build time: ${build_s}s"
say "image size: $(( size / 1000000 )) MB"
"${pm[@]}" run --rm "${lim[@]}" --entrypoint python "$IMAGE" -c \
  'import sys, torch, fastai, streamlit; print("image python", sys.version.split()[0], "torch", torch.__version__, "fastai", fastai.__version__, "streamlit", streamlit.__version__)'
"${pm[@]}" run --rm "${lim[@]}" "$IMAGE" sh -c 'echo "user: $(id -un) uid $(id -u); XRT_HOSTED=$XRT_HOSTED XRT_HOME=$XRT_HOME XRT_DATA_ROOTS=$XRT_DATA_ROOTS; password baked in: ${XRT_PASSWORD:-none}"; ls /app/.streamlit'

# 3. Start it in hosted mode with a password, a data folder and a home volume.
mkdir -p "$tmp/data/images"
podman volume rm -f xrt-smoke-home >/dev/null 2>&1 || true
"${pm[@]}" run -d "${lim[@]}" --name "$NAME" -p "127.0.0.1:$PORT:8501" --shm-size 1g \
  -e XRT_PASSWORD="$PASSWORD" -v xrt-smoke-home:/var/lib/xrt -v "$tmp/data/images:/data:ro" "$IMAGE" >/dev/null 2>"$tmp/run.err" \
  || { cat "$tmp/run.err"; exit 1; }  # (podman's "no systemd for health-check timers" notes stay in run.err)
say "started $NAME on 127.0.0.1:$PORT"

# 4. Health: the image's HEALTHCHECK (podman healthcheck run) and the endpoint from the host.
health=""
for _ in $(seq 1 90); do
  if podman healthcheck run "$NAME" >/dev/null 2>&1; then health=healthy; break; fi
  sleep 2
done
say "health (HEALTHCHECK): ${health:-unhealthy}"
[ -n "$health" ] || { podman logs "$NAME" | tail -30; exit 1; }
say "health (GET /_stcore/health from the host): $(curl -fsS "http://127.0.0.1:$PORT/_stcore/health")"

# 5. The sign-in page: the app's HTML answers, and a real browser (Playwright driving Debian's chromium; the
# page is drawn by JavaScript over Streamlit's WebSocket) shows "Sign in" with a password field, not the
# refusal page ("has no sign-in configured"). Playwright goes into a venv cached under ~/.cache once.
code=$(curl -s -o "$tmp/index.html" -w '%{http_code}' "http://127.0.0.1:$PORT/")
say "GET /: HTTP $code, $(wc -c <"$tmp/index.html") bytes, $(grep -o '<title>[^<]*</title>' "$tmp/index.html" || true)"
browser=${BROWSER:-$(command -v chromium || command -v chromium-browser || true)}
pwpy=${XDG_CACHE_HOME:-$HOME/.cache}/xrt-smoke-playwright/bin/python
if [ -n "$browser" ] && [ ! -x "$pwpy" ]; then
  python3 -m venv "${pwpy%/bin/python}" && "$pwpy" -m pip install --quiet playwright==1.65.2 2>/dev/null || true
fi
cat >"$tmp/probe.py" <<'PY'
import sys
from playwright.sync_api import sync_playwright

url, exe = sys.argv[1], sys.argv[2]
flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=exe, args=flags)
    page = browser.new_page()
    page.goto(url)
    try:
        page.locator('input[type="password"]').or_(page.get_by_text("no sign-in configured")).first.wait_for(
            timeout=90000
        )
    except Exception as e:  # noqa: BLE001
        print("wait failed:", type(e).__name__)
    text = page.inner_text("body")
    if "no sign-in configured" in text:
        verdict = "REFUSAL PAGE"
    elif "Sign in" in text and page.locator('input[type="password"]').count():
        verdict = "sign-in page"
    else:
        verdict = "neither"
    print(verdict + ": " + " | ".join(line.strip() for line in text.splitlines() if line.strip())[:200])
    browser.close()
PY
probe() { if [ -n "$browser" ] && [ -x "$pwpy" ]; then "$pwpy" "$tmp/probe.py" "$1" "$browser" 2>&1 | tail -1; else echo "unchecked (no chromium/playwright)"; fi; }
signin=$(probe "http://127.0.0.1:$PORT/")
say "sign-in (XRT_PASSWORD set): $signin"
if podman logs "$NAME" 2>&1 | grep -q "no sign-in configured"; then say "server log: REFUSAL"; else say "server log: no refusal"; fi

# 6. One tiny training run inside the container (the built-in synthetic sample, CPU, no download).
say "tiny training run in the container"
t0=$(date +%s)
podman exec "$NAME" python -m core train --kind sample --arch resnet18 --epochs 1 --img-size 32 --no-pretrained \
  --freeze-epochs 0 >"$tmp/train.log" 2>&1 && train_rc=0 || train_rc=$?
tail -15 "$tmp/train.log"
say "tiny run: exit $train_rc in $(( $(date +%s) - t0 ))s"
podman exec "$NAME" python -m core runs --limit 3 2>&1 | tail -5 || true

# 7. Control: the same image with no sign-in configured must show the refusal page, nothing else.
"${pm[@]}" run -d "${lim[@]}" --name "$NAME-nopw" -p "127.0.0.1:$((PORT + 1)):8501" "$IMAGE" >/dev/null 2>&1
for _ in $(seq 1 60); do curl -fsS "http://127.0.0.1:$((PORT + 1))/_stcore/health" >/dev/null 2>&1 && break; sleep 2; done
control=$(probe "http://127.0.0.1:$((PORT + 1))/")
say "control (no password, no secrets.toml): $control"
"${pm[@]}" rm -f "$NAME-nopw" >/dev/null 2>&1

say "summary: build ${build_s}s, image $(( size / 1000000 )) MB, health ${health:-unhealthy}, sign-in: ${signin%%:*}, without a sign-in: ${control%%:*}, tiny run exit $train_rc"
"${pm[@]}" rm -f -t 10 "$NAME" >/dev/null 2>&1
podman volume rm -f xrt-smoke-home >/dev/null 2>&1 || true
if podman container exists "$NAME"; then say "$NAME NOT removed"; else say "stopped and removed $NAME and its volume"; fi
[ "${signin%%:*}" = "sign-in page" ] && [ "${control%%:*}" = "REFUSAL PAGE" ] && [ "$train_rc" = 0 ]
