"""A fast SMTP sink to send to: Postfix's smtp-sink, else an aiosmtpd sink in another process."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _wait_for(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.recv(100)
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the sink on port {port} did not start")


class Sink:
    """A running sink process; ``kind`` says which one."""

    def __init__(self, prefer_postfix: bool = True) -> None:
        self.port = _free_port()
        if prefer_postfix and Path(SMTP_SINK).exists():
            self.kind = "smtp-sink"
            command = [SMTP_SINK, "-u", "nobody", f"{HOST}:{self.port}", "256"]
        else:
            self.kind = "aiosmtpd"
            command = [sys.executable, "-m", "bench.aiosmtpd_sink", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        _wait_for(self.port)

    @property
    def server_name(self) -> str:
        """The server name for an SMTP server record."""
        return f"{HOST}:{self.port}"

    def stop(self) -> None:
        """End the sink process (started by us)."""
        self.process.terminate()
        self.process.wait(timeout=10)
