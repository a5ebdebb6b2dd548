"""An aiosmtpd server that discards what it receives (used when smtp-sink is missing)."""

import sys
import threading

from aiosmtpd.controller import Controller


class Discard:
    """Accept and drop every message."""

    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


if __name__ == "__main__":
    controller = Controller(Discard(), hostname="127.0.0.1", port=int(sys.argv[1]))
    controller.start()
    threading.Event().wait()
