# One nursery instance. compose.yaml runs three of these behind Caddy.
#   docker build -t nursery .
#   docker run -e NURSERY_DATABASE_URL=... -e NURSERY_REDIS_URL=... -e NURSERY_SECRET_KEY=... nursery
#
# Installs exactly the versions of requirements.lock (scripts/lock), and nursery without
# extras: the image always has a database URL, so no embedded PostgreSQL, and no test tools.
FROM python:3.13-slim AS build
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY nursery ./nursery
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint requirements.lock .

FROM python:3.13-slim
RUN useradd --system --uid 10001 --create-home --home-dir /app nursery
COPY --from=build /wheels /wheels
COPY --from=build /src/requirements.lock /tmp/requirements.lock
# Offline, from the wheels built above; pip check fails the build on a missing dependency.
RUN pip install --no-cache-dir --no-index --find-links /wheels --constraint /tmp/requirements.lock nursery \
    && pip check && rm -rf /wheels /tmp/requirements.lock
USER nursery
WORKDIR /app
# Listen on every interface of the container; a shutdown drains (docs/protocol.md) within
# NURSERY_SHUTDOWN_TIMEOUT, so compose's stop_grace_period must be longer.
ENV NURSERY_HOST=0.0.0.0 \
    NURSERY_PORT=4000 \
    NURSERY_DATA_DIR=/app/data \
    PYTHONUNBUFFERED=1
EXPOSE 4000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:4000/healthz', timeout=2).status != 200)"]
CMD ["nursery", "serve"]
