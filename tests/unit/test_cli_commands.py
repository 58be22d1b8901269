"""The command table: every verb is found where its dotted path says, and takes what the CLI
passes it (the settings, the arguments the table names, and facts/interrupt as asked)."""

from __future__ import annotations

import inspect

import pytest

from runner.cli.main import COMMANDS, LazyVerb, build_parser

LAZY = [c for c in COMMANDS if isinstance(c.run, LazyVerb)]


def test_every_command_but_upgrade_is_a_lazy_verb():
    # upgrade chooses between two verbs (--dry-run) in a function of its own
    assert {c.name for c in COMMANDS} - {c.name for c in LAZY} == {"upgrade"}


@pytest.mark.parametrize("command", LAZY, ids=lambda c: c.name)
def test_the_verb_resolves_and_takes_what_the_cli_passes(command):
    verb: LazyVerb = command.run
    assert verb.path.startswith("runner.commands."), verb.path
    fn = verb.resolve()
    parameters = inspect.signature(fn).parameters
    positional = [name for name, p in parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    # the settings, then the named arguments, passed by position
    assert positional[0] == "settings" and len(positional) == 1 + len(verb.names), verb.path
    keywords = {name for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
    expected = (
        {"log"}
        | ({"facts"} if verb.facts else set())
        | ({"interrupt"} if verb.interrupt else set())
    )
    assert keywords == expected, verb.path


@pytest.mark.parametrize("command", LAZY, ids=lambda c: c.name)
def test_the_parser_gives_every_argument_the_verb_reads(command):
    parsed = build_parser()._subparsers._group_actions[0].choices[command.name]
    dests = {action.dest for action in parsed._actions}
    assert set(command.run.names) <= dests


def test_a_mistyped_path_fails_here_not_in_a_process_test():
    with pytest.raises(ModuleNotFoundError):
        LazyVerb("runner.commands.no_such_module:verb").resolve()
    with pytest.raises(AttributeError):
        LazyVerb("runner.commands.status:no_such_verb").resolve()


@pytest.mark.parametrize(
    "words",
    [
        ["upgrade"],
        ["upgrade", "abc123", "--phase", "expand", "--json"],
        ["upgrade", "--dry-run"],
        ["downgrade", "-1"],
        ["check", "--lint", "--phase", "expand"],
        ["verify", "--skip", "data", "--exclude", "R1", "--since", "a1"],
        ["sql", "a1:b2"],
        ["revision", "-m", "add table", "--autogenerate"],
        ["merge", "-m", "heads"],
        *[
            [command.name]
            for command in COMMANDS
            if command.name not in ("downgrade", "stamp", "merge", "revision")  # need arguments
        ],
    ],
    ids=" ".join,
)
def test_the_parser_built_for_one_command_parses_it_as_the_full_parser(words):
    assert build_parser(words).parse_args(words) == build_parser().parse_args(words)


def test_the_parser_for_one_command_builds_that_command_only():
    choices = build_parser(["upgrade"])._subparsers._group_actions[0].choices
    assert list(choices) == ["upgrade"]
    for words in (["-v", "upgrade"], ["--help"], ["upgrad"], []):  # the full parser
        choices = build_parser(words)._subparsers._group_actions[0].choices
        assert set(choices) == {c.name for c in COMMANDS} | {"ecs"}


def test_an_error_after_the_command_reads_the_same_with_either_parser():
    from runner.errors import UsageError

    words = ["upgrade", "--bogus"]
    messages = []
    for parser in (build_parser(words), build_parser()):
        with pytest.raises(UsageError) as raised:
            parser.parse_args(words)
        messages.append(raised.value.message)
    assert messages[0] == messages[1]
