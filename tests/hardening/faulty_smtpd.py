"""A scripted SMTP server on 127.0.0.1 that misbehaves at a chosen step, in plain text or TLS.

aiosmtpd always answers correctly; this one sends what a broken or hostile server sends:
nothing, garbage, bare LF, over-long lines, non-numeric codes, or a dropped connection.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"
STEPS = ("banner", "ehlo", "mail", "rcpt", "data", "end")
DEFAULT_REPLIES = {
    "banner": b"220 faulty.test ESMTP\r\n",
    "ehlo": b"250-faulty.test\r\n250 8BITMIME\r\n",
    "mail": b"250 2.1.0 ok\r\n",
    "rcpt": b"250 2.1.5 ok\r\n",
    "data": b"354 end with <CRLF>.<CRLF>\r\n",
    "end": b"250 2.0.0 queued\r\n",
}
DROP, STALL = "drop", "stall"


class _Closed(Exception):
    """The script ends this connection."""


@dataclass
class Script:
    """What the server does: per step a reply (bytes) or ``DROP`` / ``STALL``."""

    faults: dict[str, bytes | str] = field(default_factory=dict)
    # Seconds to wait before every reply (a slow but working server).
    delay: float = 0.0
    # Close the connection after this many bytes of message data (mid-DATA).
    drop_after_data_bytes: int | None = None
    # Implicit TLS; with ``close_after_handshake`` the connection ends right after it.
    tls: ssl.SSLContext | None = None
    close_after_handshake: bool = False


class FaultyServer:
    """Serves ``script`` to every connection; counts messages it received in full."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        # accept() is not woken by close() from another thread: poll the stop flag instead.
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.complete_messages: list[bytes] = []
        self.connections = 0
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    @property
    def server_name(self) -> str:
        """The server name to store in an SMTP server record."""
        return f"{HOST}:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _reply(self, conn: socket.socket, step: str) -> None:
        fault = self.script.faults.get(step)
        if fault == DROP:
            raise _Closed
        if fault == STALL:
            self._stop.wait()
            raise _Closed
        if self.script.delay:
            time.sleep(self.script.delay)
        conn.sendall(fault if isinstance(fault, bytes) else DEFAULT_REPLIES[step])

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)  # accepted sockets inherit the listener's poll timeout otherwise
        try:
            if self.script.tls is not None:
                conn = self.script.tls.wrap_socket(conn, server_side=True)
                self._conns.append(conn)
                if self.script.close_after_handshake:
                    raise _Closed
            reader = conn.makefile("rb")
            self._reply(conn, "banner")
            while True:
                line = reader.readline(10_000)
                if not line:
                    return
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb in (b"EHLO", b"HELO"):
                    self._reply(conn, "ehlo")
                elif verb == b"MAIL":
                    self._reply(conn, "mail")
                elif verb == b"RCPT":
                    self._reply(conn, "rcpt")
                elif verb == b"DATA":
                    self._reply(conn, "data")
                    self._read_data(reader)
                    self._reply(conn, "end")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:  # RSET, NOOP
                    conn.sendall(b"250 ok\r\n")
        except (_Closed, OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def _read_data(self, reader) -> None:
        data = bytearray()
        limit = self.script.drop_after_data_bytes
        while True:
            line = reader.readline(100_000)
            if not line:
                raise _Closed
            if line == b".\r\n":
                self.complete_messages.append(bytes(data))
                return
            data += line
            if limit is not None and len(data) >= limit:
                raise _Closed

    def stop(self) -> None:
        """Stop serving: stalled connections end, every socket closes."""
        self._stop.set()
        self.sock.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in self._threads:
            thread.join(5)
