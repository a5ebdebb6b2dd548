"""smtpsite-maildir: an example third-party smtpsite delivery plugin that writes a Maildir.

Each message is written to ``tmp/`` under a unique name, synced to disk, then renamed into
``new/`` (the Maildir rule: a reader never sees half a message), and ``new/`` is synced.
Before the message come the envelope lines a local delivery agent writes,
``Return-Path: <sender>`` and one ``Delivered-To:`` line per envelope recipient (Bcc
recipients included: the Maildir is one mailbox that receives everything). Line ends are
stored as LF, as Maildir readers expect.

The Maildir must lie under one of the directories listed in ``SMTPSITE_PICKUP_ROOTS``, the
places smtpsite lets file-writing plugins write to. With ``create`` on, the Maildir (and
the folder) is made at the first delivery; its parent folder must already exist.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import secrets
import socket
import time
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

__all__ = ["MaildirDelivery"]

_SUBDIRS = ("tmp", "new", "cur")
_FILE_MODE = 0o600  # mail is nobody else's business
_DIR_MODE = 0o700
# A Maildir++ folder name: dot-separated parts (``Lists.smtpsite``), no slashes, no "..".
_FOLDER = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
# Deliveries made by this process, part of each unique name.
_deliveries = itertools.count()


class MaildirDelivery(DeliveryMethod):
    """Deliver each message as one file in a Maildir (``new/``), for any Maildir reader."""

    name = "maildir"
    label = "Maildir"
    description = "Write each message into a Maildir folder, for a mail reader or IMAP server."
    fields = (
        Field("path", "Maildir path", "path", required=True,
              help="Absolute path of the Maildir (the folder holding tmp, new and cur), under "
                   "one of SMTPSITE_PICKUP_ROOTS."),
        Field("create", "Create if missing", "boolean", default=False,
              help="Create the Maildir (and the folder) at the first delivery; its parent "
                   "folder must exist."),
        Field("folder", "Folder",
              help="Optional Maildir++ folder, e.g. Archive or Lists.smtpsite; empty: the inbox."),
    )

    @classmethod
    def validate(cls, options: dict[str, Any], context: PluginContext) -> dict[str, str]:
        """The folder name's form; the path: absolute, under a root, a usable Maildir."""
        folder = options.get("folder")
        if folder and not _FOLDER.fullmatch(folder):
            return {"folder": "may hold only letters, digits, '-', '_' and single dots "
                              "between parts (e.g. Lists.smtpsite)"}
        problem = _maildir_problem(options, context)
        return dict([problem]) if problem else {}

    # -- sending ---------------------------------------------------------------------
    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[DeliveryResult]:
        """Write one file per message; a failure for one message does not stop the others."""
        if not messages:
            return []
        try:
            maildir = self._prepare()
        except DeliveryError as exc:
            return [DeliveryResult(m.message_id, False, error=exc) for m in messages]
        results = []
        for message in messages:
            try:
                name = _deliver(maildir, message)
            except DeliveryError as exc:
                results.append(DeliveryResult(message.message_id, False, error=exc))
                continue
            results.append(DeliveryResult(message.message_id, True, reply=f"delivered as new/{name}"))
        return results

    def check(self, sender: str, recipient: str) -> CheckResult:
        """Write and remove a probe file in ``tmp/``; delivers nothing and creates nothing."""
        problem = _maildir_problem(self.options, self.context)
        if problem:
            return CheckResult(False, f"{problem[0]} {problem[1]}")
        maildir = _target(self.options)
        transcript = [f"{maildir} is under an allowed root"]
        if not maildir.exists():
            return CheckResult(True, f"{maildir} will be created at the first delivery; "
                                     "nothing was sent", transcript)
        probe = maildir / "tmp" / f"{_unique_name()}.check"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _FILE_MODE)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return CheckResult(False, f"cannot write to {maildir / 'tmp'}: {_reason(exc)}",
                               transcript)
        transcript.append("created and removed a file in tmp/")
        return CheckResult(True, f"{maildir} is a writable Maildir; nothing was sent", transcript)

    def _prepare(self) -> Path:
        """The Maildir to deliver to, checked again (a symlink may have changed) and made."""
        problem = _maildir_problem(self.options, self.context)
        if problem:
            raise DeliveryError(f"Maildir {problem[0]} {self.options.get(problem[0])!r} {problem[1]}")
        base = Path(self.options["path"]).resolve()
        maildir = _target(self.options)
        if self.options.get("create"):
            try:
                _make_maildir(base)
                if maildir != base:
                    _make_maildir(maildir)
                    # Maildir++ readers (Dovecot, Courier) mark a folder with this file.
                    (maildir / "maildirfolder").touch(_FILE_MODE)
            except OSError as exc:
                raise DeliveryError(f"cannot create the Maildir {maildir}: {_reason(exc)}") from None
        return maildir


def _target(options: dict[str, Any]) -> Path:
    """The directory that receives the mail: the Maildir itself or its ``.folder``."""
    base = Path(options["path"]).resolve()
    return base / f".{options['folder']}" if options.get("folder") else base


def _maildir_problem(options: dict[str, Any], context: PluginContext) -> tuple[str, str] | None:
    """``(field, message)`` for what is wrong with the Maildir options, or None."""
    raw = options.get("path") or ""
    path = Path(raw)
    if not path.is_absolute():
        return "path", "must be an absolute path"
    roots = tuple(Path(r).resolve() for r in context.pickup_roots)
    if not roots:
        return "path", ("cannot be used: no pickup roots are configured; set "
                        "SMTPSITE_PICKUP_ROOTS to the directories Maildirs may be written under")
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        return "path", f"cannot be resolved: {exc}"
    if not any(resolved == root or root in resolved.parents for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        return "path", f"must lie under one of the allowed pickup roots: {allowed}"
    create = bool(options.get("create"))
    if not resolved.exists():
        if not create:
            return "path", "does not exist; create the Maildir first or turn on 'create'"
        if not resolved.parent.is_dir():
            return "path", "has no parent folder; only the Maildir itself is created"
        return _writable("path", resolved.parent)
    if not resolved.is_dir():
        return "path", "is not a directory"
    places = [("path", resolved)]
    if options.get("folder"):
        places.append(("folder", resolved / f".{options['folder']}"))
    for field, directory in places:
        # Nothing inside the Maildir may lead elsewhere through a symbolic link.
        for inner in [directory, *(directory / d for d in _SUBDIRS)]:
            if inner.is_symlink():
                return field, f"must not lead through a symbolic link ({inner} is one)"
        missing = [d for d in _SUBDIRS if not (directory / d).is_dir()]
        if missing and not create:
            return field, (f"is not a Maildir ({directory} has no {', '.join(missing)}); "
                           "turn on 'create' to make it")
    return _writable("path", resolved)


def _writable(field: str, directory: Path) -> tuple[str, str] | None:
    if os.access(directory, os.W_OK | os.X_OK):
        return None
    return field, f"cannot be written: {directory} is not writable by this process"


def _make_maildir(directory: Path) -> None:
    directory.mkdir(mode=_DIR_MODE, exist_ok=True)
    for sub in _SUBDIRS:
        (directory / sub).mkdir(mode=_DIR_MODE, exist_ok=True)


def _unique_name() -> str:
    """A unique name per the Maildir spec: ``seconds.MusecPpidQcountRrandom.host``."""
    seconds, usec = divmod(time.time_ns() // 1000, 1_000_000)
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    return f"{seconds}.M{usec}P{os.getpid()}Q{next(_deliveries)}R{secrets.token_hex(8)}.{host}"


def _envelope_lines(message: OutgoingMessage) -> bytes:
    addresses = [message.sender, *message.recipients]
    if any(c in a for a in addresses for c in "\r\n\x00"):
        # A line break would let an address add headers of its own: no server would help.
        raise DeliveryError("an envelope address contains a line break", permanent=True)
    lines = [f"Return-Path: <{message.sender}>\n"]
    lines += [f"Delivered-To: {rcpt}\n" for rcpt in message.recipients]
    return "".join(lines).encode("utf-8")


def _deliver(maildir: Path, message: OutgoingMessage) -> str:
    """Write ``message`` into ``maildir``: tmp/, fsync, rename to new/, fsync new/."""
    content = _envelope_lines(message) + message.data.replace(b"\r\n", b"\n")
    name = _unique_name()
    temp, final = maildir / "tmp" / name, maildir / "new" / name
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _FILE_MODE)
    except OSError as exc:
        raise DeliveryError(f"cannot create a file in {temp.parent}: {_reason(exc)}") from None
    try:
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        # The name is unique (time, pid, counter, 64 random bits), so nothing is replaced.
        os.rename(temp, final)
    except OSError as exc:
        _remove(temp)
        raise DeliveryError(f"cannot write a message file in {maildir}: {_reason(exc)}") from None
    try:
        _fsync_directory(final.parent)
    except OSError as exc:
        # The file is in new/ and a reader may have seen it: never deliver it again.
        raise DeliveryError(
            f"new/{name} was written but could not be synced ({_reason(exc)}); "
            "the message may or may not be delivered",
            after_data=True,
        ) from None
    return name


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    # Already gone, or a leftover in tmp/ that Maildir readers ignore: nothing to report.
    with contextlib.suppress(OSError):
        os.unlink(path)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)
