# syntax=docker/dockerfile:1
# migration-runner image: the runner, the service's migrations and models, nothing else.
# Build:  docker build -t migration-runner .
# Run:    docker run --rm -e DATABASE_URL=... migration-runner            (upgrade to head)
#         docker run --rm -e DATABASE_URL=... migration-runner check --json

FROM python:3.11-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY runner/ runner/
RUN uv sync --locked --no-dev

FROM python:3.11-slim-bookworm
# The RDS CA bundle, for DB_SSLMODE=verify-full with DB_SSLROOTCERT=/certs/global-bundle.pem
ADD --chmod=444 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /certs/global-bundle.pem
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin runner
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY --from=build /app/runner /app/runner
COPY alembic.ini ./
COPY alembic/ alembic/
COPY src/ src/
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    MIGRATION_LOG_FORMAT=json
# Compile the migrations and models too, and write the manifest: a no-op run then imports
# neither the revision files nor Alembic nor SQLAlchemy.
RUN python -m compileall -q alembic src runner && migration-runner manifest
USER 10001
STOPSIGNAL SIGTERM
ENTRYPOINT ["migration-runner"]
CMD ["upgrade"]
