"""``migration-runner ecs run``: run the migration as a one-off ECS task and wait for it.

The launcher (:mod:`runner.ecs.launcher`) starts the task, streams the container's CloudWatch
log events, waits for the task to stop and exits with the container's own exit code, or with
one of its own codes (:class:`runner.ecs.errors.LaunchExit`) when there is none to give.
boto3 (the ``aws`` extra) is imported only by these commands.
"""
