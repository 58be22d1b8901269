"""Pulumi entry point: `pulumi up` in infra/ (see README.md)."""

from migration_infra.program import deploy
from migration_infra.settings import load_settings

deploy(load_settings())
