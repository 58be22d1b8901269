"""Runs the Pulumi program against Pulumi's unit-test mocks: offline, no Pulumi CLI, no AWS.

The mocks echo each resource's inputs back (plus the ARNs and ids AWS would assign), and a
recording monitor keeps what the program registered -- type, name, resolved inputs, parent,
dependencies -- for the tests to read: what the engine (and so AWS) would have received.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime.mocks import MockMonitor

from migration_infra.program import Deployment, deploy
from migration_infra.settings import StackSettings, parse_settings

INFRA = Path(__file__).resolve().parent.parent
ACCOUNT = "123456789012"
REGION = "eu-west-1"


@dataclass
class Registered:
    typ: str
    name: str
    urn: str
    inputs: dict[str, Any]
    parent: str
    dependencies: list[str]
    custom_timeouts: dict[str, str]
    protect: bool = False

    def json(self, key: str) -> Any:
        return json.loads(self.inputs[key])


class FakeAws(pulumi.runtime.Mocks):
    """Assigns what AWS would: ARNs, ids, the repository URL, a task definition revision."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        state = dict(args.inputs)
        name = args.inputs.get("name", args.name)
        kind = args.typ.split(":")[1].split("/")[0]
        state.setdefault("arn", f"arn:aws:{kind}:{REGION}:{ACCOUNT}:{args.typ.split(':')[-1]}/{name}")
        if args.typ == "aws:cloudwatch/logGroup:LogGroup":
            state["arn"] = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}"
        if args.typ == "aws:ecr/repository:Repository":
            state["arn"] = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{name}"
            state["repositoryUrl"] = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{name}"
        if args.typ == "aws:ecs/taskDefinition:TaskDefinition":
            state["revision"] = 7
        if args.typ == "aws:ecs/cluster:Cluster":
            state["name"] = args.name
        if args.typ == "command:local:Command":
            state["stdout"] = ""
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {
            "aws:index/getRegion:getRegion": {"name": REGION, "region": REGION},
            "aws:index/getCallerIdentity:getCallerIdentity": {
                "accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/ci", "userId": "ci"},
            "aws:index/getPartition:getPartition": {"partition": "aws",
                                                    "dnsSuffix": "amazonaws.com"},
        }.get(args.token, {})


class RecordingMonitor(MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.registered: list[Registered] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            timeouts = request.customTimeouts
            self.registered.append(Registered(
                typ=request.type, name=request.name, urn=response.urn,
                inputs=self.resources[response.urn].state if request.custom else {},
                parent=request.parent, dependencies=list(request.dependencies),
                custom_timeouts={"create": timeouts.create, "update": timeouts.update},
                protect=request.protect))
        return response


@dataclass
class Program:
    deployment: Deployment
    registered: list[Registered] = field(default_factory=list)

    def all(self, typ: str) -> list[Registered]:
        return [r for r in self.registered if r.typ == typ]

    def one(self, typ: str, name: str | None = None) -> Registered:
        found = [r for r in self.all(typ) if name is None or r.name == name]
        assert len(found) == 1, f"{len(found)} resources of type {typ} named {name}"
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.registered if r.urn == urn)


def run_program(settings: StackSettings) -> Program:
    """Run `deploy(settings)` under the mocks and wait for every registration."""
    monitor = RecordingMonitor(FakeAws())
    pulumi.runtime.set_mocks(FakeAws(), project="migration-runner", stack="prod",
                             preview=False, monitor=monitor)
    result: dict[str, Deployment] = {}

    @pulumi.runtime.test
    def program():
        result["deployment"] = deploy(settings, program_dir=INFRA)
        return result["deployment"].cluster

    program()
    return Program(result["deployment"], monitor.registered)


def write_revisions(directory: Path, revisions: dict[str, str | tuple[str, ...] | None]) -> Path:
    """Revision files as Alembic writes them: {revision: down_revision}."""
    directory.mkdir(parents=True, exist_ok=True)
    for revision, down in revisions.items():
        (directory / f"{revision}_step.py").write_text(
            f'"""step"""\nfrom typing import Sequence, Union\n\n'
            f'revision: str = {revision!r}\n'
            f'down_revision: Union[str, Sequence[str], None] = {down!r}\n\n\n'
            'def upgrade() -> None:\n    pass\n')
    return directory


def example_config() -> dict[str, Any]:
    """The `migration-runner:*` keys of examples/Pulumi.prod.yaml, namespace stripped."""
    document = yaml.safe_load((INFRA / "examples" / "Pulumi.prod.yaml").read_text())
    prefix = "migration-runner:"
    return {key[len(prefix):]: value for key, value in document["config"].items()
            if key.startswith(prefix)}


@pytest.fixture
def versions_dir(tmp_path: Path) -> Path:
    return write_revisions(tmp_path / "versions", {"aaa111": None, "bbb222": "aaa111"})


# What CI passes to `pulumi up` on top of the stack file (examples/github-actions-deploy.yml).
CI_IMAGE_DIGEST = "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
CI_APP_IMAGE = (f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/maive-server@sha256:"
                "9b2c41f0aa1e4e6b35c87d6a0d0f2e4b1f4f0c7e8a1d2c3b4a5f6e7d8c9b0a1f")


@pytest.fixture
def config(versions_dir: Path) -> dict[str, Any]:
    example = example_config()
    return {**example, "migrationsDir": str(versions_dir), "imageDigest": CI_IMAGE_DIGEST,
            "app": {**example["app"], "image": CI_APP_IMAGE}}


@pytest.fixture
def settings(config: dict[str, Any]) -> StackSettings:
    return parse_settings(config, stack="prod")
