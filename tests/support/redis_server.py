"""`RedisServer`: a throw-away redis-server for the directory tests, from Debian's
`redis-server` package (scripts/ensure-redis installs it).

It listens on a free 127.0.0.1 port only, keeps nothing on disk (`--save ''`, no AOF) in a
private temporary directory, and can be restarted on the same port: a restart loses every
key, as a Redis without persistence does.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.postgres import free_port

__all__ = ["RedisServer", "RedisUnavailable"]

START_TIMEOUT_S = 20.0
START_ATTEMPTS = 3
INSTALL_HINT = "install it with scripts/ensure-redis (make test does)"


class RedisUnavailable(RuntimeError):
    """No redis-server here, or it would not start."""


class RedisServer:
    """One server in a temporary directory. `start()`, `restart()`, `stop()`, `cleanup()`."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable(f"redis-server not found: {INSTALL_HINT}")
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="switchboard-redis-"))
        self.log = self.root / "server.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.port:
            self._launch()
            return
        for attempt in range(START_ATTEMPTS):  # another process may take the port we picked
            self.port = free_port()
            try:
                self._launch()
                return
            except RedisUnavailable:
                if attempt == START_ATTEMPTS - 1:
                    raise

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as over a dead network path."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _launch(self) -> None:
        command = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.root), "--logfile", str(self.log),
            "--daemonize", "no",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise RedisUnavailable(f"redis-server did not start on port {self.port}:\n{log}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False
