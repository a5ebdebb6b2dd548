"""A live panel served in a thread and a real headless Chromium driven by playwright."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from smtpsite.extensions import db
from tests.admin.conftest import password_hash, world  # noqa: F401 - the same people and data
from tests.conftest import make_app

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"


@pytest.fixture
def panel(sqlite_template: Path, tmp_path: Path) -> Iterator:
    """The app on its own SQLite copy (no context left pushed: the server thread has its own)."""
    path = tmp_path / "smtpsite.db"
    shutil.copy(sqlite_template, path)
    application = make_app(f"sqlite:///{path}", tmp_path)
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def live_url(panel) -> Iterator[str]:
    """The panel served on 127.0.0.1 on a free port, in a thread."""
    server = make_server("127.0.0.1", 0, panel, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


@pytest.fixture
def page(browser) -> Iterator:
    """A fresh browser tab at a laptop-sized window, failing fast."""
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    # Script errors and CSP refusals; failed loads are checked by status below (Chromium's
    # own favicon request, which the app does not serve, is reported only to the console).
    tab.on("console", lambda msg: errors.append(msg.text)
           if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    tab.console_errors = errors
    # Every asset the pages load must come from the app itself and exist.
    missing: list[str] = []
    tab.on("response", lambda r: missing.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    tab.failed_responses = missing
    yield tab
    context.close()


def shot(page, name: str) -> None:
    """Save a full-page screenshot under test-output/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
