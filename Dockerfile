# paywatch: one image for every process (`paywatch run ingest|worker|projector|api|executor`).
# Used by docker-compose.yml; compose owns the healthchecks, so there is no HEALTHCHECK here.

# ---- build: a virtualenv holding paywatch and its runtime dependencies (never the dev extras)
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, read from pyproject itself, so editing the code reuses this layer.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY paywatch ./paywatch
RUN pip install --no-deps . && paywatch --help > /dev/null

# ---- runtime: the virtualenv, a non-root user, nothing else
FROM python:3.11-slim

RUN groupadd --system --gid 10001 paywatch \
    && useradd --system --uid 10001 --gid paywatch --home-dir /var/lib/paywatch --no-create-home paywatch \
    && mkdir -p /var/lib/paywatch \
    && chown paywatch:paywatch /var/lib/paywatch

COPY --from=build /opt/venv /opt/venv

# Containers listen on every interface; Faust tables (rocksdb) live under the state dir,
# which compose mounts as a volume for the worker.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PAYWATCH_ENV=prod \
    PAYWATCH_BIND_HOST=0.0.0.0 \
    PAYWATCH_STATE_DIR=/var/lib/paywatch

USER paywatch
WORKDIR /var/lib/paywatch
EXPOSE 8080 8081

ENTRYPOINT ["paywatch"]
CMD ["run", "api"]
