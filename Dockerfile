# migration-runner image: the runner, the service's migrations and models, nothing else.
#
# Build on a normal machine:
#   docker build -t migration-runner .
# Build on a machine without a registry or Docker (podman, a local Debian base): bash .ci/build-image
# The final stage is FROM scratch: image/rootfs.sh copies in only what the runner needs at run
# time (see docs/image.md).
# Run:
#   docker run --rm --read-only -e DATABASE_URL=... migration-runner              (upgrade to head)
#   docker run --rm --read-only -e DATABASE_URL=... migration-runner check --json
#
# Build arguments (all optional):
#   BASE_IMAGE  a Debian bookworm image with python3 >= 3.11 on PATH and apt (the build stage;
#               the final image takes its interpreter and libraries from it)
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
# binutils: strip the debug information some wheels ship in their extension modules (~2 MB
# compressed); build stage only
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends binutils >/dev/null \
    && rm -rf /var/lib/apt/lists/*
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
# What is never used at run time: the dependencies' test suites and C sources, the venv's
# activation scripts, debug information in extension modules (only where there is some:
# the libraries auditwheel patched are left as they are).
RUN find .venv/lib/python3*/site-packages -mindepth 2 -maxdepth 2 -type d \
      \( -name tests -o -name testing \) -exec rm -rf {} + \
    && find .venv/lib/python3*/site-packages \
      \( -name '*.c' -o -name '*.h' -o -name '*.cpp' -o -name '*.hpp' -o -name '*.pyx' \
         -o -name '*.pxd' \) -delete \
    && rm -f .venv/bin/activate* .venv/bin/deactivate* \
    && find .venv -name '*.so' -exec sh -c \
      'for so; do if readelf -S "$so" | grep -q "[.]debug_info"; then strip --strip-debug "$so"; fi; done' \
      sh {} +
# The root filesystem: the interpreter, the standard library it uses, the shared libraries it
# and the venv load, CA certificates, the RDS bundle. No shell, no apt, no perl, no locales.
COPY image/rootfs.sh /usr/local/lib/rootfs.sh
COPY --from=rds-ca /global-bundle.pem /rootfs/certs/global-bundle.pem
RUN sh /usr/local/lib/rootfs.sh /rootfs /app/.venv \
    && chmod 0444 /rootfs/certs/global-bundle.pem \
    && mkdir -p /rootfs/app

FROM scratch
COPY --from=build /rootfs /
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY alembic.ini ./
COPY alembic/ alembic/
COPY src/ src/
ENV PATH=/app/.venv/bin:/usr/local/bin:/usr/bin:/bin PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUTF8=1 LANG=C.UTF-8 MIGRATION_LOG_FORMAT=json
# Compile the migrations and models too, and write the manifest: a no-op run then imports
# neither the revision files nor Alembic nor SQLAlchemy, and nothing is ever written at run
# time (the root filesystem can be read-only, without any tmpfs). Exec form: there is no
# shell. The manifest also proves, at build time, that the slim root imports Alembic,
# SQLAlchemy and the migrations.
RUN ["python", "-m", "compileall", "-q", "alembic", "src"]
# hadolint ignore=DL3059
RUN ["migration-runner", "manifest"]
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
