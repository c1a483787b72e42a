"""Benchmarks of crisiswatch: `crisiswatch bench` (`benchmarks.harness`) runs them all.

Each module also runs on its own (`python -m benchmarks.<name>`); see docs/benchmarks.md.
"""

#: The machine's PostgreSQL server, where scratch databases are created (trust auth, loopback).
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
