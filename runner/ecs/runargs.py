"""Pure: what RunTask is asked, given the request, the task definition and (with
``--network-from-service``) the service the task should run like.

- Placement: a capacity provider strategy, or a launch type (FARGATE when neither is given).
  With ``--network-from-service`` and neither, the service's own placement and platform.
- Network: ``awsvpc`` task definitions need subnets and security groups, from the request or
  the service; other network modes (``bridge``, ``host``) take none, and Fargate refuses
  them. Both are refused here, before anything starts, with a message naming the fix.
- Overrides: the container's command and environment, the task's CPU and memory.
- Tags and ``propagateTags``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.ecs.errors import LaunchUsageError

FARGATE_PROVIDERS = ("FARGATE", "FARGATE_SPOT")


def placement(request: Any, service: Mapping[str, Any] | None) -> dict[str, Any]:
    """``launchType`` or ``capacityProviderStrategy`` (and ``platformVersion``)."""
    if request.capacity_providers:
        chosen: dict[str, Any] = {
            "capacityProviderStrategy": [
                {"capacityProvider": name, "weight": weight, "base": base}
                for name, weight, base in request.capacity_providers
            ]
        }
    elif request.launch_type:
        chosen = {"launchType": request.launch_type}
    elif service and service.get("capacityProviderStrategy"):
        chosen = {"capacityProviderStrategy": service["capacityProviderStrategy"]}
    else:
        chosen = {"launchType": (service or {}).get("launchType") or "FARGATE"}
    if request.platform_version and not on_fargate(chosen):
        raise LaunchUsageError("--platform-version is Fargate's: leave it out on EC2")
    platform = request.platform_version or (service or {}).get("platformVersion")
    if platform and platform != "LATEST" and on_fargate(chosen):
        chosen["platformVersion"] = platform
    return chosen


def on_fargate(chosen: Mapping[str, Any]) -> bool:
    if "launchType" in chosen:
        return bool(chosen["launchType"] == "FARGATE")
    return any(
        item["capacityProvider"] in FARGATE_PROVIDERS
        for item in chosen.get("capacityProviderStrategy", [])
    )


def network(
    request: Any,
    definition: Mapping[str, Any],
    chosen: Mapping[str, Any],
    service: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """``networkConfiguration`` for RunTask, or None for a task definition that takes none.
    Raises :class:`LaunchUsageError` for what RunTask would refuse."""
    label = f"{definition['family']}:{definition['revision']}"
    mode = definition.get("networkMode") or "bridge"
    given = bool(request.subnets or request.security_groups)
    if mode != "awsvpc":
        if on_fargate(chosen):
            raise LaunchUsageError(
                f"task definition {label} uses network mode {mode}: Fargate runs only awsvpc "
                "task definitions; give --launch-type EC2 (or an EC2 capacity provider), or "
                "register the task definition with networkMode awsvpc"
            )
        if given:
            raise LaunchUsageError(
                f"task definition {label} uses network mode {mode}, which "
                "takes no --subnets or --security-groups: leave them out"
            )
        return None
    if given:
        if not (request.subnets and request.security_groups):
            raise LaunchUsageError(
                "--subnets and --security-groups go together "
                "(MIGRATION_ECS_SUBNETS, MIGRATION_ECS_SECURITY_GROUPS)"
            )
        return {
            "awsvpcConfiguration": {
                "subnets": list(request.subnets),
                "securityGroups": list(request.security_groups),
                "assignPublicIp": "ENABLED" if request.assign_public_ip else "DISABLED",
            }
        }
    if service and service.get("networkConfiguration"):
        return dict(service["networkConfiguration"])
    raise LaunchUsageError(
        f"task definition {label} uses awsvpc: give --subnets and --security-groups "
        "(MIGRATION_ECS_SUBNETS, MIGRATION_ECS_SECURITY_GROUPS), or --network-from-service "
        "to run with an existing service's network configuration"
    )


def overrides(request: Any, container: str) -> dict[str, Any] | None:
    """RunTask ``overrides``: the container's command and environment, the task's size."""
    mine: dict[str, Any] = {}
    if request.command is not None:
        mine["command"] = list(request.command)
    if request.environment:
        mine["environment"] = [{"name": k, "value": v} for k, v in request.environment]
    task: dict[str, Any] = {}
    if mine:
        task["containerOverrides"] = [{"name": container, **mine}]
    if request.cpu:
        task["cpu"] = request.cpu
    if request.memory:
        task["memory"] = request.memory
    return task or None


def run_task_args(
    request: Any,
    definition: Mapping[str, Any],
    container: str,
    service: Mapping[str, Any] | None,
    started_by: str,
) -> dict[str, Any]:
    """The RunTask arguments for one task of ``definition``, its ``container`` migrating."""
    chosen = placement(request, service)
    args: dict[str, Any] = {
        "cluster": request.cluster,
        "taskDefinition": definition["taskDefinitionArn"],
        "count": 1,
        "startedBy": started_by,
        **chosen,
    }
    configuration = network(request, definition, chosen, service)
    if configuration is not None:
        args["networkConfiguration"] = configuration
    task_overrides = overrides(request, container)
    if task_overrides is not None:
        args["overrides"] = task_overrides
    if request.tags:
        args["tags"] = [{"key": k, "value": v} for k, v in request.tags]
    if request.propagate_tags:
        args["propagateTags"] = request.propagate_tags
    return args


def registerable(service_model: Any) -> frozenset[str]:
    """What RegisterTaskDefinition accepts, from botocore's model of the API (so a field AWS
    adds is copied as soon as botocore knows it); ``tags`` are handled on their own."""
    members = service_model.operation_model("RegisterTaskDefinition").input_shape.members
    return frozenset(members) - {"tags"}
