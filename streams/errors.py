"""The exception tree of crisiswatch.

    CrisiswatchError                 root: anything crisiswatch raises on purpose
     +-- ConfigurationError          bad or missing settings (exit code 2)
     +-- InputError                  a file or argument that cannot be used (exit code 2)
     +-- ServiceError                a broker, database or HTTP service failed (exit code 1)
          +-- ServiceUnavailableError   could not be reached at all
          +-- FencedError               a write refused: another worker took the partitions

Library exceptions are wrapped `from exc` at the adapter that calls the library. Bad *events*
are never exceptions: the codec returns them as data (`streams.codec.Rejection`).
"""

from __future__ import annotations


class CrisiswatchError(Exception):
    """Root of crisiswatch's exceptions."""

    exit_code = 1


class ConfigurationError(CrisiswatchError):
    exit_code = 2


class InputError(CrisiswatchError):
    exit_code = 2


class ServiceError(CrisiswatchError):
    exit_code = 1


class ServiceUnavailableError(ServiceError):
    pass


class FencedError(ServiceError):
    """A batch was refused because another worker has since been assigned some of its
    partitions (a higher lease epoch in PostgreSQL). Not transient: retrying the same write
    can never succeed; the writer is no longer the owner of `partitions`."""

    def __init__(self, message: str, partitions: frozenset[tuple[str, int]]) -> None:
        super().__init__(message)
        self.partitions = partitions
