# syntax=docker/dockerfile:1
# Build stage: install Ruta and its dependencies into a virtualenv.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/ruta
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN /opt/ruta/bin/pip install --no-cache-dir .

# Runtime stage: the virtualenv only, run as a non-root user.
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 ruta \
 && useradd --system --uid 10001 --gid ruta --home-dir /srv/ruta --create-home ruta
COPY --from=build /opt/ruta /opt/ruta
ENV PATH=/opt/ruta/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RUTA_ENV=production \
    RUTA_HOST=0.0.0.0 \
    RUTA_PORT=8000 \
    RUTA_WORKER_HEARTBEAT_PATH=/tmp/ruta-worker.heartbeat
WORKDIR /srv/ruta
USER 10001:10001
EXPOSE 8000
# The API's check. A container running `ruta worker` serves no port: give it
# `ruta worker --check` instead (compose.yaml does), which reads the heartbeat file above.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# Migrations are applied before the server starts.
CMD ["ruta", "serve", "--migrate"]
