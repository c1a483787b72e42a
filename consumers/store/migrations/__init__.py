"""Versioned SQL migrations of the PostgreSQL schema, applied in order by `consumers.store`.

Files are named `NNNN_name.sql` (NNNN: the version, applied in ascending order). Each runs in
its own transaction, so a file must not contain BEGIN/COMMIT. Never edit a migration that has
been released: add a new one.
"""
