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
