"""The runner's own psycopg sessions: connect, version table, ledger, statement bounds."""
