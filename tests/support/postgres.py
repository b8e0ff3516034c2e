"""`PostgresServer`: a throw-away Postgres cluster for the store tests, from Debian's
`postgresql` package (scripts/ensure-postgres installs it).

Postgres refuses to run as root, which is what CI runs as: as root, every server command runs
as the unprivileged `postgres` system user (which the package creates), in a private
temporary directory that user owns. The server listens on a free 127.0.0.1 port only; the
superuser `switchboard` logs in over TCP with a random password (SCRAM), so the tests go
through the same password login a deployment's DATABASE_URL does.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bindir", "free_port"]

SERVER_USER = "postgres"
SUPERUSER = "switchboard"
START_TIMEOUT_S = 60
START_ATTEMPTS = 3
INSTALL_HINT = "install it with scripts/ensure-postgres (make test does)"


class PostgresUnavailable(RuntimeError):
    """No Postgres server binaries here, or no unprivileged user to run them as root."""


def _version(bindir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))


def find_bindir() -> Path:
    """The newest Debian Postgres server bin directory (initdb and pg_ctl are not on PATH)."""
    found = sorted(
        (path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")), key=_version
    )
    if found:
        return found[-1]
    on_path = shutil.which("pg_ctl")
    if on_path and Path(on_path).resolve().with_name("initdb").exists():
        return Path(on_path).resolve().parent
    raise PostgresUnavailable(f"Postgres server binaries not found: {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One cluster in a temporary directory. `start()`, `restart()`, `stop()`, `cleanup()`."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root and there is no {SERVER_USER!r} user: {INSTALL_HINT}"
                ) from None
            self._as_user = {"user": account.pw_uid, "group": account.pw_gid}
        self.root = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
        if self._as_user:
            os.chown(self.root, self._as_user["user"], self._as_user["group"])
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.password = secrets.token_urlsafe(18)
        self.port = 0
        self._created = 0

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{SUPERUSER}:{secret}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        if not self.data.exists():
            self._initdb()
        if self.port:
            self._pg_ctl("start")
            return
        for attempt in range(START_ATTEMPTS):  # another process may take the port we picked
            self.port = free_port()
            try:
                self._pg_ctl("start")
                return
            except PostgresUnavailable:
                if attempt == START_ATTEMPTS - 1:
                    raise

    def stop(self) -> None:
        self._pg_ctl("stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop")
        shutil.rmtree(self.root, ignore_errors=True)

    async def create_database(self) -> str:
        """A new empty database; its URL."""
        self._created += 1
        name = f"store_test_{self._created}"
        admin = await asyncpg.connect(self.url(), timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        return self.url(name)

    def _initdb(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if self._as_user:
            os.chown(password_file, self._as_user["user"], self._as_user["group"])
        self._run(
            self.bindir / "initdb",
            "-D", self.data, "-U", SUPERUSER, f"--pwfile={password_file}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-locale",
            "--no-sync",
        )  # fmt: skip
        password_file.unlink()

    def _pg_ctl(self, action: str) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c fsync=off -c full_page_writes=off"
        )
        self._run(
            self.bindir / "pg_ctl",
            "-D", self.data, "-l", self.log, "-w", "-t", str(START_TIMEOUT_S), "-m", "fast",
            "-o", options, action,
        )  # fmt: skip

    def _run(self, *command: Any) -> None:
        result = subprocess.run(
            [str(part) for part in command],
            check=False,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S + 10,
            **self._as_user,
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PostgresUnavailable(
                f"{Path(str(command[0])).name} {command[-1]} failed ({result.returncode}): "
                f"{result.stderr.strip()}\n{log}"
            )
