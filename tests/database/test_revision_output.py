"""What a revision writes itself (print, sys.stderr, warnings, stdlib logging) becomes
``revision.output`` events, redacted like everything else: stdout carries only JSON lines."""

from __future__ import annotations

from tests.support.helpers import PASSWORD, run, runner_env


def test_revision_output_becomes_redacted_json_events(database, project):
    project.revision(
        "o1",
        None,
        """
        import logging, os, sys, warnings
        print("backfilled 50%")
        print("connecting to", os.environ["DATABASE_URL"])
        sys.stderr.write("a line to stderr\\n")
        warnings.warn("this option is deprecated")
        logging.getLogger("myapp.migrations").warning("from the app's logger")
        op.execute("CREATE TABLE o1 (x int)")
    """,
    )
    project.revision("o2", "o1", "print('second revision speaking')")
    result = run(runner_env(database, project))

    assert result.code == 0, result.stdout + result.stderr
    result.assert_clean()  # every stdout line JSON, no secret, no traceback
    assert result.stderr == ""
    output = [e for e in result.events if e["event"] == "revision.output"]
    texts = {e["revision"]: [] for e in output}
    for event in output:
        texts[event["revision"]].append(event["text"])
    assert texts["o2"] == ["second revision speaking"]
    said = "\n".join(texts["o1"])
    for line in (
        "backfilled 50%",
        "a line to stderr",
        "this option is deprecated",
        "from the app's logger",
    ):
        assert line in said, output
    assert "connecting to ***" in said  # DATABASE_URL is a secret: masked whole
    assert PASSWORD not in said
