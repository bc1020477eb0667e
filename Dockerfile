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
# binutils for `strip` (build stage only): the compiled extensions of some
# wheels carry their debug information (~20 MB of the image).
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/mailwatch
WORKDIR /src
# Dependencies first, exactly the runtime lock (requirements/runtime.txt, every
# file checked against its hash): this layer (the slow download) is reused
# until the lock changes, not on every code change.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/mailwatch/bin/pip install --require-hashes --no-deps -r requirements/runtime.txt
COPY clients/python ./clients/python
COPY service ./service
COPY pyproject.toml README.md ./
# Then our two distributions (their dependencies are all locked above), and
# what serve and migrate never use goes: pip and setuptools (the virtualenv's
# own, from ensurepip), every discovery document google-api-python-client
# ships but Gmail's (~110 MB; the service builds only the gmail v1 client, with
# static_discovery), and the extensions' debug sections (the vendored
# libraries in *.libs/ are left alone: auditwheel patched them, and they carry none).
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/mailwatch/bin/pip install --no-deps ./clients/python . \
 && /opt/mailwatch/bin/pip uninstall -q -y pip setuptools \
 && find /opt/mailwatch/lib/python3*/site-packages/googleapiclient/discovery_cache/documents \
      -type f ! -name gmail.v1.json -delete \
 && find /opt/mailwatch/lib/python3*/site-packages -name '*.so' -type f -not -path '*.libs/*' \
      -exec strip --strip-debug {} + \
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
