"""The first run end to end: ``init`` and ``serve`` as a new user runs them, then Chromium.

Sign in with the printed password, send a test email through the demo site's default server
(the catcher), read it under Captured mail. The email's HTML tries a script and a remote
image; neither may run or load.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.fernet import Fernet

from tests.browser.conftest import shot
from tests.catcher.test_cli_and_first_run import PROJECT, wait_for_port
from tests.smtpd import HOST, free_port


class _Recorder(BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.requests.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def remote() -> Iterator[tuple[int, list[str]]]:
    """A stand-in for "the internet": an HTTP server that notes every request it gets."""
    handler = type("Recorder", (_Recorder,), {"requests": []})
    server = ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port, handler.requests
    server.shutdown()
    server.server_close()
    thread.join(5)


def flask(*args: str) -> list[str]:
    """The command line of ``flask --app app ARGS``."""
    return [sys.executable, "-m", "flask", "--app", "app", *args]


@pytest.fixture
def first_run(tmp_path) -> Iterator[dict]:
    """``smtpsite init`` on an empty database, then ``smtpsite serve`` on free ports."""
    http_port, catcher_port = free_port(), free_port()
    env = {**os.environ, "SMTPSITE_DATABASE_URL": f"sqlite:///{tmp_path / 'smtpsite.db'}",
           "SMTPSITE_SECRET_KEYS": Fernet.generate_key().decode(),
           "SMTPSITE_FLASK_SECRET_KEY": "test-only-session-key",
           "SMTPSITE_CATCHER_PORT": str(catcher_port)}
    init = subprocess.run(flask("smtpsite", "init"), cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    password = re.search(r"password: (\S+)", init.stdout).group(1)
    serve = subprocess.Popen(flask("smtpsite", "serve", "--port", str(http_port)),
                             cwd=PROJECT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(http_port, serve)
        wait_for_port(catcher_port, serve)
        yield {"url": f"http://{HOST}:{http_port}", "catcher": catcher_port, "env": env,
               "password": password, "init": init.stdout}
    finally:
        serve.send_signal(signal.SIGTERM)
        output, _ = serve.communicate(timeout=60)
    assert serve.returncode == 0, output
    assert f"mail catcher listening on 127.0.0.1:{catcher_port}" in output


def test_a_new_user_sends_a_test_email_and_reads_it(first_run, browser, remote):  # noqa: F811
    base = first_run["url"]
    assert "Created the site 'demo'" in first_run["init"]
    # Mail queued for the demo site goes out through serve's background worker.
    queued = subprocess.Popen(
        flask("smtpsite", "send", "--site", "demo", "--to", "queued@example.com",
              "--subject", "Queued for the demo site", "--text", "via the worker"),
        cwd=PROJECT, env=first_run["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)

    remote_port, remote_requests = remote
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    context.set_default_timeout(15_000)
    page = context.new_page()
    console: list[tuple[str, str]] = []
    page.on("console", lambda message: console.append((message.type, message.text)))
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    try:
        page.goto(f"{base}/admin/")
        page.fill("#email", "admin@localhost")
        page.fill("#password", first_run["password"])
        page.click("button[type=submit]")
        page.wait_for_selector("#signed-in-as")

        page.click("nav >> text=Send test email")
        page.select_option("#site", label="Demo site")
        page.click("#prefill-form button[type=submit]")
        assert page.input_value("#server") == f"127.0.0.1:{first_run['catcher']}"
        assert page.input_value("#security") == "none"
        page.fill("#to", "new.user@example.com")
        page.fill("#subject", "Hello from the demo site")
        page.fill("#html", '<p id="para">Welcome to smtpsite.</p>'
                           "<script>document.getElementById('para').textContent='script ran'"
                           f'</script><img id="remote" src="http://{HOST}:{remote_port}/pixel.png"'
                           ' alt="remote image">')
        page.click("#testmail-form button[type=submit]")
        assert page.locator(".check-outcome").inner_text() == "SENT"

        page.click("nav >> text=Captured mail")
        row = page.locator("tr", has_text="Hello from the demo site")
        assert "new.user@example.com" in row.inner_text()
        assert "demo@example.com" in row.inner_text()
        sent, _ = queued.communicate(timeout=120)
        assert queued.returncode == 0 and "status: queued" in sent, sent
        deadline = time.monotonic() + 30
        while "Queued for the demo site" not in page.inner_text("body"):
            assert time.monotonic() < deadline, "the worker did not deliver the queued email"
            time.sleep(0.5)
            page.reload()
        shot(page, "catcher-01-captured-mail")

        page.click("text=Hello from the demo site")
        frame = page.frame_locator("#captured-html")
        assert frame.locator("#para").inner_text() == "Welcome to smtpsite."  # no script ran
        assert frame.locator("#remote").evaluate("img => img.naturalWidth") == 0
        assert page.get_attribute("#captured-html", "sandbox") == ""
        shot(page, "catcher-02-captured-message")
        page.click("text=Headers")
        assert "Hello from the demo site" in page.inner_text("#captured-headers")

        page.click("#delete-form button[type=submit]")  # asks first (the panel's CSP allows it)
        page.wait_for_selector("text=Record was successfully deleted.")
        assert dialogs == ["Are you sure you want to delete this record?"]
        assert "Hello from the demo site" not in page.inner_text("body")
        assert "Queued for the demo site" in page.inner_text("body")
    finally:
        context.close()
        if queued.poll() is None:
            queued.kill()
            queued.communicate()
    assert remote_requests == []  # the remote image was never fetched
    # Chromium says why: the frame's sandbox stopped the script, its policy the image. No
    # other page error (the one failed load is Chromium's own favicon request).
    errors = [line for kind, line in console if kind == "error"
              and not line.startswith("Failed to load resource")]
    assert len(errors) == 2, errors
    assert "Blocked script execution in" in errors[0] and "sandboxed" in errors[0]
    assert f"{HOST}:{remote_port}/pixel.png" in errors[1] and '"img-src data:"' in errors[1]
