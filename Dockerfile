# Container image of the X-ray trainer's hosted demo (see README, "Hosted demo in a container").
#
#   docker build -t xray-trainer .            # or: podman build -t xray-trainer .
#   docker compose up                         # compose.yaml: volumes, secrets, health check
#
# BASE_IMAGE: any Debian/Ubuntu image with Python 3.10+ (python3 with venv; apt-get installs the venv module
# when it is missing). The default is CPython 3.11, the Python that constraints.txt was resolved on, so the
# image gets exactly the locked versions. On another Python (a CUDA base image such as
# nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 has 3.12) the lock is skipped and the newest versions that
# requirements.txt allows are installed, as scripts/install.sh does.
# GPU hosts: the x86_64 torch wheels from PyPI carry their own CUDA libraries, so this same image trains on
# an NVIDIA GPU when the container is given one (NVIDIA Container Toolkit; compose.yaml has the lines).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The venv module (a plain Debian/Ubuntu base has python3 without it) and nothing else from apt.
RUN set -eu; \
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -m venv /opt/venv

WORKDIR /app
# Dependencies first (their layer is reused while only the code changes), with the lock when the Python
# matches constraints.txt's "# python X.Y" line, as scripts/install.sh does.
COPY requirements.txt constraints.txt ./
RUN set -eu; \
    python -m pip install --quiet --upgrade pip; \
    lock_py=$(sed -n 's/^# python \([0-9][0-9.]*\)$/\1/p' constraints.txt); \
    py=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
    if [ "$lock_py" = "$py" ]; then \
      python -m pip install --quiet -r requirements.txt -c constraints.txt; \
    else \
      echo "constraints.txt was resolved on Python $lock_py, this is $py: installing without the lock"; \
      python -m pip install --quiet -r requirements.txt; \
    fi; \
    python -m pip check

# A non-root user that owns only its data folder. The code stays root-owned and read-only to the app.
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin xrt \
    && mkdir -p /var/lib/xrt /data \
    && chown xrt:xrt /var/lib/xrt
COPY . /app

# Hosted mode. XRT_HOME (runs, uploads, jobs, the installation secret) is a volume; XRT_DATA_ROOTS names the
# read-only data folders mounted under /data. No secret is set here: XRT_PASSWORD (or a secrets.toml with a
# password or an [auth] section) comes from the environment or a mounted file when the container starts.
ENV XRT_HOSTED=1 \
    XRT_HOME=/var/lib/xrt \
    XRT_DATA_ROOTS=/data \
    HOME=/home/xrt
VOLUME ["/var/lib/xrt"]
USER xrt
EXPOSE 8501

# Streamlit answers "ok" on /_stcore/health (under server.baseUrlPath when one is set, e.g. through
# STREAMLIT_SERVER_BASE_URL_PATH behind a reverse proxy).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; b = os.environ.get('STREAMLIT_SERVER_BASE_URL_PATH', '').strip('/'); u = 'http://127.0.0.1:8501/' + (b + '/' if b else '') + '_stcore/health'; assert urllib.request.urlopen(u, timeout=4).read() == b'ok'"

# 0.0.0.0 inside the container only: .streamlit/config.toml keeps 127.0.0.1 for a plain `make run`, and
# compose.yaml publishes the port on the host's loopback (for a reverse proxy) unless told otherwise.
CMD ["python", "-m", "streamlit", "run", "streamlit_app.py", "--server.address", "0.0.0.0", "--server.port", "8501"]
