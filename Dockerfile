# migration-runner image: the runner, the service's migrations and models, nothing else.
#
# Build on a normal machine:
#   docker build -t migration-runner .
# Build on a machine without a registry or Docker (podman, a local Debian base): bash .ci/build-image
# Run:
#   docker run --rm --read-only -e DATABASE_URL=... migration-runner              (upgrade to head)
#   docker run --rm --read-only -e DATABASE_URL=... migration-runner check --json
#
# Build arguments (all optional):
#   BASE_IMAGE  a Debian bookworm image with python3 >= 3.11 on PATH (both stages use it)
#   UV_IMAGE    an image holding the uv binary at /uv
#   EXTRAS      extras to install, space-separated (e.g. "aws" for IAM database authentication)
#   VERSION, REVISION, SOURCE   OCI labels
# Build secret (optional): id=ca, extra CA certificates (PEM) for reaching the package index
#   through a TLS-intercepting proxy; used only inside the RUN that needs it, never stored.
# Build context (optional): rds-ca=<dir holding global-bundle.pem> replaces the download of
#   the RDS CA bundle from AWS.
# No "# syntax=" line: BuildKit would fetch that frontend from Docker Hub.

ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13

FROM ${UV_IMAGE} AS uv

# The RDS CA bundle, for DB_SSLMODE=verify-full with DB_SSLROOTCERT=/certs/global-bundle.pem.
FROM scratch AS rds-ca
ADD https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /global-bundle.pem

FROM ${BASE_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PYTHON=python3 \
    UV_NO_CACHE=1
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
ARG EXTRAS=""
# The dependencies first (a layer that changes only with uv.lock), then the project itself as
# an ordinary, non-editable install: the venv alone is the runner.
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca; fi; \
    set --; for extra in ${EXTRAS}; do set -- "$@" --extra "$extra"; done; \
    uv sync --locked --no-dev --no-install-project "$@"
COPY runner/ runner/
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca; fi; \
    set --; for extra in ${EXTRAS}; do set -- "$@" --extra "$extra"; done; \
    uv sync --locked --no-dev --no-editable "$@"
# The dependencies' own test suites and C sources are never imported at run time (~3.5 MB).
RUN find .venv/lib/python3*/site-packages -mindepth 2 -maxdepth 2 -type d \
      \( -name tests -o -name testing \) -exec rm -rf {} + \
    && find .venv/lib/python3*/site-packages \
      \( -name '*.c' -o -name '*.h' -o -name '*.cpp' -o -name '*.hpp' -o -name '*.pyx' \) -delete

FROM ${BASE_IMAGE}
# The runtime needs no package installer: drop the base image's pip (absent on a Debian base).
RUN if python3 -m pip --version >/dev/null 2>&1; then \
      python3 -m pip uninstall --yes --quiet pip setuptools wheel; \
    fi; \
    groupadd --gid 10001 runner \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /app \
      --shell /usr/sbin/nologin runner
WORKDIR /app
COPY --from=rds-ca /global-bundle.pem /certs/global-bundle.pem
COPY --from=build /app/.venv /app/.venv
COPY alembic.ini ./
COPY alembic/ alembic/
COPY src/ src/
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    MIGRATION_LOG_FORMAT=json
# Compile the migrations and models too, and write the manifest: a no-op run then imports
# neither the revision files nor Alembic nor SQLAlchemy, and nothing is ever written at run
# time (the root filesystem can be read-only, without any tmpfs).
RUN chmod 0444 /certs/global-bundle.pem \
    && python -m compileall -q alembic src \
    && migration-runner manifest
USER 10001:10001
# Last, so that a new commit changes no layer above.
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="migration-runner" \
      org.opencontainers.image.description="Applies Alembic migrations to PostgreSQL safely before a deploy" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
STOPSIGNAL SIGTERM
ENTRYPOINT ["migration-runner"]
CMD ["upgrade"]
