# syntax=docker/dockerfile:1

# The mailwatch service image: `mailwatch serve` (default) or any other
# mailwatch command, e.g. `migrate`. Build from the repository root:
#   docker build -t mailwatch .
# BASE_IMAGE must provide python3 (3.11+) with venv; both stages use it so the
# virtualenv's interpreter links stay valid.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# Build-stage only (not in the final image): a package index mirror, and a CA
# bundle for networks that intercept TLS (mount it with the build, e.g.
# `-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/build-ca.crt:ro`).
ARG PIP_INDEX_URL
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=60 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/mailwatch
WORKDIR /src
# Dependencies first, from the two pyproject files only: this layer (the slow
# download) is reused until a dependency changes, not on every code change.
COPY pyproject.toml ./pyproject.toml
COPY clients/python/pyproject.toml ./clients/python/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -c 'import tomllib; deps = [d for f in ("pyproject.toml", "clients/python/pyproject.toml") for d in tomllib.load(open(f, "rb"))["project"]["dependencies"] if not d.startswith("mailwatch-client")]; open("/tmp/requirements.txt", "w").write("\n".join(deps) + "\n")' \
 && /opt/mailwatch/bin/pip install -r /tmp/requirements.txt
COPY clients/python ./clients/python
COPY service ./service
COPY README.md ./README.md
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/mailwatch/bin/pip install --no-deps ./clients/python . \
 && /opt/mailwatch/bin/pip uninstall -y pip \
 && /opt/mailwatch/bin/python -m compileall -q /opt/mailwatch/lib

FROM ${BASE_IMAGE}
# No build tools and no pip in the runtime stage: only the interpreter and the virtualenv.
COPY --from=build /opt/mailwatch /opt/mailwatch
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only (bytecode was compiled at build time).
# HOME: the numeric user has no passwd entry; /tmp is the one writable place.
ENV PATH=/opt/mailwatch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MAILWATCH_LISTEN=0.0.0.0:50051 \
    MAILWATCH_HTTP_LISTEN=0.0.0.0:8080
USER 10001:10001
EXPOSE 50051 8080
# Exec form: mailwatch is PID 1 and receives SIGTERM itself, so the drain runs.
ENTRYPOINT ["mailwatch"]
CMD ["serve"]
