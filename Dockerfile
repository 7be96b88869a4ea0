# wsbroadcast service image. Build: docker build -t wsbroadcast .
# Run:   docker run -p 8000:8000 -e WSB_PUBLISH_TOKEN=... wsbroadcast
# tests/test_deploy.py runs this file's ENTRYPOINT and HEALTHCHECK as written; docs/deploy.md.

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies in their own layer, rebuilt only when pyproject.toml changes: the project's
# dependencies, the redis and postgres extras and the build backend, read from
# pyproject.toml (no lockfile yet).
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); print(*p['build-system']['requires'], *p['project']['dependencies'], *p['project']['optional-dependencies']['redis'], *p['project']['optional-dependencies']['postgres'], sep=chr(10))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# The source, installed without resolving anything again; pip check fails the build when the
# layer above missed a dependency the package declares.
COPY README.md ./
COPY wsbroadcast ./wsbroadcast
RUN pip install --no-deps --no-build-isolation . \
    && pip check


FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin wsb
COPY --from=builder /opt/venv /opt/venv
# WSB_HOST 0.0.0.0: reachable from outside the container, so the service refuses to start
# without WSB_PUBLISH_TOKEN (or WSB_OPEN_PUBLISH=true).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WSB_HOST=0.0.0.0 \
    WSB_PORT=8000
# An empty working folder: no stray .env is read.
WORKDIR /srv/wsbroadcast
USER 10001:10001
EXPOSE 8000
# No curl in the slim image: urllib raises (exit 1) on a refused connection or a non-2xx status.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['WSB_PORT'] + '/healthz', timeout=2)"]
# Exec form: wsbroadcast is PID 1 and gets SIGTERM itself, so it closes subscribers with 1001.
ENTRYPOINT ["wsbroadcast"]
