"""The Pulumi program that deploys migration-runner on ECS and gates every app deploy on it.

Modules, one job each: `settings` (stack config in, a typed object out), `images` (image
references), `heads` (the migrations' heads, read without importing them), `containers` (ECS
container definitions), `policies` (IAM policy documents), `metrics` (the runner's metric names),
`launcher` (the gate's command line) -- all plain functions, no Pulumi -- and `runner_task`,
`gate`, `app`, `program`: the Pulumi resources built from them.
"""
