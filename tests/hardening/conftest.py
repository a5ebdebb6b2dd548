"""Fixtures for the hardening tests: scripted faulty servers and a bound on how long a send runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from tests.hardening.faulty_smtpd import FaultyServer, Script

# Far above every timeout the tests set (1 s per step): only a real hang reaches it.
HANG_LIMIT = 30.0


@pytest.fixture
def faulty_server() -> Iterator[Callable[..., FaultyServer]]:
    """``faulty_server(Script(...))`` starts a scripted server, stopped after the test."""
    started: list[FaultyServer] = []

    def start(script: Script | None = None) -> FaultyServer:
        server = FaultyServer(script or Script())
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def run_bounded(app: Flask, call: Callable[[], Any]) -> Any:
    """Run ``call`` in its own thread and app context; fail the test if it hangs."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        with app.app_context():
            try:
                outcome["value"] = call()
            except BaseException as exc:  # handed to the test thread below
                outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_LIMIT)
    if thread.is_alive():
        pytest.fail(f"the sender still runs after {HANG_LIMIT} s: it hangs past its timeouts")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
