"""Delivery through the local MTA's sendmail interface (Postfix, Exim, msmtp...).

Runs ``PATH -i -f SENDER -- RECIPIENT...`` with the message on standard input, without a
shell; the MTA's own configuration decides where the mail goes. The exit status follows
``sysexits.h``: 0 means the MTA took the message, anything else means it did not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smtpsite.delivery import (
    CheckResult,
    DeliveryError,
    DeliveryMethod,
    DeliveryResult,
    Field,
    OutgoingMessage,
    PluginContext,
)

EX_DATAERR, EX_NOUSER, EX_NOHOST, EX_TEMPFAIL = 65, 67, 68, 75
# Another server would get the same answer for these.
PERMANENT_EXITS = frozenset({EX_DATAERR, EX_NOUSER, EX_NOHOST})
_STDERR_LIMIT = 500


def _program_problem(raw: str) -> str | None:
    path = Path(raw)
    if not path.is_absolute():
        return "must be an absolute path"
    if not path.exists():
        return "does not exist"
    if not path.is_file():
        return "is not a file"
    if not os.access(path, os.X_OK):
        return "is not executable"
    return None


class SendmailDelivery(DeliveryMethod):
    """Hand each message to the local MTA's ``sendmail`` program."""

    name = "sendmail"
    label = "Local MTA (sendmail)"
    description = (
        "Hand each message to the local mail server through its sendmail program; "
        "its configuration decides where the mail goes."
    )
    fields = (
        Field("path", "Program", "path", default="/usr/sbin/sendmail",
              help="Absolute path of the sendmail-compatible program."),
        Field("timeout", "Timeout (seconds)", "float", default=60.0, min_value=1, max_value=600,
              help="How long the program may take for one message before it is stopped."),
    )

    @classmethod
    def validate(cls, options: dict[str, Any], context: PluginContext) -> dict[str, str]:
        """The program: absolute, existing, executable."""
        problem = _program_problem(options["path"])
        return {"path": problem} if problem else {}

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[DeliveryResult]:
        """Run the program once per message; a failure for one does not stop the others."""
        results = []
        for message in messages:
            try:
                reply = self._run(message)
            except DeliveryError as exc:
                results.append(DeliveryResult(message.message_id, False, code=exc.code, error=exc))
                continue
            results.append(DeliveryResult(message.message_id, True, reply=reply))
        return results

    def _run(self, message: OutgoingMessage) -> str:
        path = self.options.get("path") or "/usr/sbin/sendmail"
        timeout = float(self.options.get("timeout") or 60.0)
        addresses = [message.sender, *message.recipients]
        if any(c in a for a in addresses for c in "\r\n\x00"):
            raise DeliveryError("an envelope address contains a line break", permanent=True)
        argv = [path, "-i", "-f", message.sender, "--", *message.recipients]
        try:
            # A session of its own, so a timeout can stop the program and anything it started.
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise DeliveryError(f"cannot run {path}: {exc.strerror or exc}") from None
        with proc:  # closes the pipes whatever happens
            try:
                stdout, stderr = proc.communicate(message.data, timeout=timeout)
            except subprocess.TimeoutExpired:
                # communicate() closes stdin once every byte is written: from then on the
                # program had the whole message and may have queued it.
                written = proc.stdin is None or proc.stdin.closed
                _stop(proc)
                raise DeliveryError(
                    f"{path} did not finish within {timeout:g} seconds and was stopped"
                    + ("; it had the whole message and may have queued it" if written else ""),
                    after_data=written,
                ) from None
        output = _trim(stderr) or _trim(stdout)
        if proc.returncode == 0:
            return output or f"accepted by {path}"
        if proc.returncode < 0:
            raise DeliveryError(
                f"{path} was killed by signal {-proc.returncode}; it may have queued the message",
                after_data=True,
            )
        permanent = proc.returncode in PERMANENT_EXITS
        kind = " (permanent failure)" if permanent else ""
        if proc.returncode == EX_TEMPFAIL:
            kind = " (temporary failure)"
        raise DeliveryError(
            f"{path} exited with status {proc.returncode}{kind}: {output or 'no message'}",
            code=proc.returncode,
            permanent=permanent,
        )

    def check(self, sender: str, recipient: str) -> CheckResult:
        """The program exists and is executable; it is not run, so nothing is sent."""
        path = self.options.get("path") or "/usr/sbin/sendmail"
        problem = _program_problem(path)
        if problem:
            return CheckResult(False, f"{path} {problem}", [f"checked {path}: {problem}"])
        return CheckResult(True, f"{path} exists and is executable; nothing was sent",
                           [f"checked {path}: exists and is executable"])


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _trim(output: bytes) -> str:
    text = output.decode("utf-8", "replace").strip()
    if len(text) > _STDERR_LIMIT:
        text = "..." + text[-_STDERR_LIMIT:]
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())
