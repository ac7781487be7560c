# streamapp image: the Faust worker (default command) and the simulator
# (`python -m streamapp.simulator ...`). See docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# jemalloc instead of glibc's malloc: with glibc the worker's heap grew about
# 1 MB a minute under steady load while its memory in use stayed flat
# (streamapp/allocator.py, bench/README.md "Soak").
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2 \
    && rm -rf /var/lib/apt/lists/*
ENV LD_PRELOAD=libjemalloc.so.2

# Dependencies first, straight from setup.cfg's pinned install_requires. This
# layer is rebuilt only when setup.cfg changes, not on every code edit. Every
# pin has a manylinux wheel, so no compiler is needed.
WORKDIR /src
COPY pyproject.toml setup.cfg ./
RUN python -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); print(c['options']['install_requires'])" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the package itself (streamapp, agents, tables, SQL migrations, static
# files). setup.cfg is listed again so that this COPY has a match even when
# README.md (the long description) does not exist.
COPY setup.cfg README.md* ./
COPY streamapp ./streamapp
COPY agents ./agents
COPY tables ./tables
RUN pip install . \
    && cd / && rm -rf /src

# Unprivileged user. /app is an empty working directory, so imports come from
# the installed package and never from a stray source tree. /data holds the
# worker's RocksDB table files; mount a volume there.
RUN groupadd --system --gid 10001 streamapp \
    && useradd --system --uid 10001 --gid streamapp --home-dir /app --shell /usr/sbin/nologin streamapp \
    && mkdir -p /app /data/worker \
    && chown -R streamapp:streamapp /app /data
WORKDIR /app
USER streamapp

# Inside a container the web server must listen on all interfaces, so that
# port publishing and health checks work. The config default (127.0.0.1) is
# right outside containers. Table files go to the /data volume.
ENV WEB_HOST=0.0.0.0 \
    WEB_PORT=6066 \
    STREAMAPP_DATA_DIR=/data/worker

EXPOSE 6066

# Healthy when the worker's web server answers and PostgreSQL, MongoDB and
# Redis are reachable (/api/health/ gives 503 otherwise). The simulator serves
# no HTTP, so docker-compose.yml gives it its own check.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/health/' % os.environ.get('WEB_PORT', '6066'), timeout=4)"]

CMD ["faust", "-A", "streamapp", "worker", "-l", "info"]
