"""Generated rows: every table filled, in foreign-key order, within its constraints."""

from __future__ import annotations

from runner.checklist import schema_snapshot as catalog
from runner.checklist import seed_rows
from runner.checklist.schema_snapshot import Catalog, Column, Constraint, Table

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN short_code AS varchar(4);
CREATE TABLE accounts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                       code short_code NOT NULL UNIQUE, created timestamptz NOT NULL DEFAULT now());
CREATE TABLE calls (id serial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts,
                    parent_id int REFERENCES calls, feeling mood NOT NULL, tag char(2) UNIQUE,
                    meta jsonb NOT NULL, ref uuid UNIQUE, day date, active boolean NOT NULL,
                    amount numeric(10, 2), tags text[] NOT NULL, doubled int GENERATED ALWAYS AS (id * 2) STORED);
CREATE TABLE members (account_id bigint REFERENCES accounts, call_id int REFERENCES calls,
                      PRIMARY KEY (account_id, call_id));
"""


def test_rows_go_into_every_table_within_types_keys_and_unique_constraints(database):
    with database.connect() as conn:
        conn.execute(SCHEMA)
        snap = catalog.snapshot(conn)
        first = seed_rows.insert_rows(conn, seed_rows.plan_rows(snap, 3, 0))
        second = seed_rows.insert_rows(conn, seed_rows.plan_rows(snap, 3, 3))
    assert first.failed == () and second.failed == ()
    assert first.filled == ("accounts", "calls", "members")
    assert database.query(
        "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM calls), "
        "(SELECT count(*) FROM members)"
    ) == [(6, 6, 6)]
    assert database.query("SELECT count(DISTINCT account_id) FROM calls")[0][0] > 1


def test_a_table_that_cannot_be_filled_is_reported_and_the_others_still_are(database):
    with database.connect() as conn:
        conn.execute("CREATE TABLE picky (n int CHECK (n < 0)); CREATE TABLE easy (n int)")
        seeded = seed_rows.insert_rows(conn, seed_rows.plan_rows(catalog.snapshot(conn), 2, 1))
    assert seeded.filled == ("easy",)
    assert [(t, "picky_n_check" in why) for t, why in seeded.failed] == [("picky", True)]


def test_parents_come_before_children_whatever_their_names():
    fk = Constraint("fk", "f", ("a_id",), "", "zz_parent", ("id",))
    snap = Catalog(
        {
            "aa_child": Table("aa_child", (Column("a_id", "integer", True),), (fk,)),
            "zz_parent": Table("zz_parent", (Column("id", "integer", True),)),
        },
        {},
        {},
        {},
    )
    assert [t.name for t in seed_rows.order_tables(snap)] == ["zz_parent", "aa_child"]


def test_values_are_distinct_per_row_and_fit_the_width():
    assert [seed_rows.text_value("character varying(2)", n) for n in (1, 2, 255)] == [
        "01",
        "02",
        "ff",
    ]
    assert seed_rows.text_value("text", 7) == "row-7"
    assert seed_rows.text_value("mood", 3, ("a", "b")) == "b"
    assert seed_rows.text_value("tsvector", 1) is None
