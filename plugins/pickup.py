"""Delivery into a pickup directory: one ``<uuid>.eml`` file per message for a local MTA to send.

The file starts with ``X-Sender:`` and one ``X-Receiver:`` line per envelope recipient (Bcc
recipients included), then the message exactly as serialised. It is written as a file with
no name yet (Linux's ``O_TMPFILE``; elsewhere under a hidden temporary name that an MTA
watching ``*.eml`` ignores), synced to disk, then linked into place under its final name (a
link never replaces an existing file); the directory is synced once per call, before any
message of the call is reported written. An unnamed file needs no
temporary name created and removed, and a crash part-way leaves nothing behind.

The directory's file system must support hard links (every local Linux one does): linking
is how a file appears under its final name without ever replacing another.

The directory must already exist: validating options never creates folders, so a typing
mistake is reported instead of silently creating a folder no MTA watches.
"""

from __future__ import annotations

import errno
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smtpsite.delivery import (
    CheckResult,
    DeliveryError,
    DeliveryMethod,
    DeliveryResult,
    Field,
    OptionsError,
    OutgoingMessage,
    PluginContext,
)

log = logging.getLogger(__name__)

# Option names people carry over from network servers; a pickup directory has no TLS.
_TLS_WORDS = ("ssl", "tls", "security", "certificate", "ca_file")
_FILE_MODE = 0o640  # the MTA reads it through its group; mail is nobody else's business
_NAME_ATTEMPTS = 5
# Unnamed files are given their name through /proc (linkat of /proc/self/fd/N).
_UNNAMED = getattr(os, "O_TMPFILE", 0) if os.path.isdir("/proc/self/fd") else 0
# What open() answers when the file system (or kernel) cannot create unnamed files.
_NO_UNNAMED = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}


def _is_tls_option(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _TLS_WORDS)


def _under_roots(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


class PickupDelivery(DeliveryMethod):
    """Write each message as an ``.eml`` file into a directory watched by a local MTA."""

    name = "pickup"
    label = "Pickup directory"
    description = (
        "Write each message as a .eml file (X-Sender / X-Receiver lines, then the message) "
        "into a folder that a local mail server picks up."
    )
    fields = (
        Field("directory", "Directory", "path", required=True,
              help="Absolute path of an existing folder under one of SMTPSITE_PICKUP_ROOTS."),
    )

    @classmethod
    def clean_options(cls, options: Mapping[str, Any], context: PluginContext) -> dict[str, Any]:
        """As for every method, but a TLS option gets a message saying why it does not apply."""
        tls_errors = {
            key: "a pickup directory does not use TLS; remove this option"
            for key in options if _is_tls_option(key)
        }
        try:
            return super().clean_options(options, context)
        except OptionsError as exc:
            raise OptionsError({**exc.errors, **tls_errors}) from None

    @classmethod
    def validate(cls, options: dict[str, Any], context: PluginContext) -> dict[str, str]:
        """The directory: absolute, under an allowed root (after symlinks), existing, writable."""
        problem = _directory_problem(options["directory"], context)
        return {"directory": problem} if problem else {}

    # -- sending ---------------------------------------------------------------------
    def _directory(self) -> Path:
        # Checked again at send time: a symlink may have been swapped since validation.
        problem = _directory_problem(self.options.get("directory") or "", self.context)
        if problem:
            raise DeliveryError(f"pickup directory {self.options.get('directory')!r} {problem}")
        return Path(self.options["directory"]).resolve()

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[DeliveryResult]:
        """Write one file per message; a failure for one message does not stop the others."""
        if not messages:
            return []
        results = []
        try:
            # Checked once per call (the symlink check of the module docstring): a batch is
            # written within moments, and every file is made through this directory handle.
            directory = self._directory()
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except DeliveryError as exc:
            return [DeliveryResult(m.message_id, False, error=exc) for m in messages]
        except OSError as exc:
            error = DeliveryError(f"cannot open {directory}: {_reason(exc)}")
            return [DeliveryResult(m.message_id, False, error=error) for m in messages]
        try:
            for message in messages:
                try:
                    path = _write_file(directory, dir_fd, message)
                except DeliveryError as exc:
                    results.append(DeliveryResult(message.message_id, False, error=exc))
                    continue
                results.append(DeliveryResult(message.message_id, True, reply=f"written to {path}"))
            # One directory sync makes every name of the call durable before any is reported
            # written (a sync per file would cost the same again for each message).
            if any(r.ok for r in results):
                results = _synced(directory, dir_fd, results)
        finally:
            os.close(dir_fd)
        return results

    def check(self, sender: str, recipient: str) -> CheckResult:
        """Create and remove a temporary file in the directory; writes no message."""
        transcript: list[str] = []
        try:
            directory = self._directory()
        except DeliveryError as exc:
            return CheckResult(False, exc.message, transcript)
        transcript.append(f"directory {directory} is under an allowed root")
        try:
            probe = directory / f".smtpsite-check-{uuid.uuid4().hex}.tmp"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _FILE_MODE)
            try:
                os.write(fd, b"smtpsite pickup check\r\n")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(probe)
            transcript.append("created and removed a temporary file")
        except OSError as exc:
            return CheckResult(False, f"cannot write to {directory}: {_reason(exc)}", transcript)
        return CheckResult(True, f"{directory} is writable; nothing was sent", transcript)


def _directory_problem(raw: str, context: PluginContext) -> str | None:
    """What is wrong with ``raw`` as a pickup directory, or None."""
    path = Path(raw)
    if not path.is_absolute():
        return "must be an absolute path"
    roots = tuple(Path(r).resolve() for r in context.pickup_roots)
    if not roots:
        return ("cannot be used: no pickup roots are configured; SMTPSITE_PICKUP_ROOTS must be "
                "set to the directories pickup servers may write under")
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        return f"cannot be resolved: {exc}"
    if not _under_roots(resolved, roots):
        allowed = ", ".join(str(r) for r in roots)
        where = f" (it resolves to {resolved})" if str(resolved) != raw.rstrip("/") else ""
        return f"must lie under one of the allowed pickup roots: {allowed}{where}"
    if not resolved.exists():
        return "does not exist; create it first (smtpsite does not create pickup directories)"
    if not resolved.is_dir():
        return "is not a directory"
    if not os.access(resolved, os.W_OK | os.X_OK):
        return "is not writable by this process"
    return None


def _envelope_lines(message: OutgoingMessage) -> bytes:
    addresses = [message.sender, *message.recipients]
    if any(c in a for a in addresses for c in "\r\n\x00"):
        # A line break here would let an address add headers or recipients of its own.
        raise DeliveryError("an envelope address contains a line break", permanent=True)
    lines = [f"X-Sender: {message.sender}\r\n"]
    lines += [f"X-Receiver: {rcpt}\r\n" for rcpt in message.recipients]
    return "".join(lines).encode("utf-8")


def _write_file(directory: Path, dir_fd: int, message: OutgoingMessage) -> Path:
    """Write ``message`` to a new ``<uuid>.eml`` in the directory; return its path."""
    content = _envelope_lines(message) + message.data
    fd, temp = _new_file(directory, dir_fd)
    try:
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            final = _link_new_name(fd, temp, dir_fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise DeliveryError(f"cannot write a message file in {directory}: {_reason(exc)}") from None
    finally:
        if temp is not None:
            _remove(directory / temp)
    return directory / final


def _synced(directory: Path, dir_fd: int, results: list[DeliveryResult]) -> list[DeliveryResult]:
    """``results`` once the directory is synced; if it cannot be, the written files are
    in place but may not survive a crash: uncertain, never to be written again."""
    try:
        os.fsync(dir_fd)
    except OSError as exc:
        return [r if not r.ok else DeliveryResult(r.message_id, False, error=DeliveryError(
            f"{r.reply.removeprefix('written to ')} was written but {directory} could not be "
            f"synced ({_reason(exc)}); the message may or may not be delivered",
            after_data=True)) for r in results]
    return results


def _new_file(directory: Path, dir_fd: int) -> tuple[int, str | None]:
    """A new empty file: unnamed where the system can, else under a hidden temporary name."""
    if _UNNAMED:
        try:
            return os.open(".", os.O_WRONLY | _UNNAMED, _FILE_MODE, dir_fd=dir_fd), None
        except OSError as exc:
            if exc.errno not in _NO_UNNAMED:
                raise DeliveryError(f"cannot create a file in {directory}: {_reason(exc)}") from None
    temp = f".{uuid.uuid4()}.eml.tmp"
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        return os.open(temp, flags, _FILE_MODE, dir_fd=dir_fd), temp
    except OSError as exc:
        raise DeliveryError(f"cannot create a file in {directory}: {_reason(exc)}") from None


def _link_new_name(fd: int, temp: str | None, dir_fd: int) -> str:
    """Give the written file its final name; a link fails (EEXIST) rather than replace a file."""
    source = f"/proc/self/fd/{fd}" if temp is None else temp
    for _ in range(_NAME_ATTEMPTS):
        final = f"{uuid.uuid4()}.eml"
        try:
            # follow_symlinks (linkat's AT_SYMLINK_FOLLOW) is what links an unnamed file.
            os.link(source, final, src_dir_fd=None if temp is None else dir_fd,
                    dst_dir_fd=dir_fd, follow_symlinks=True)
        except FileExistsError:
            continue
        return final
    raise OSError(errno.EEXIST, "no free file name found")


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove the temporary file %s: %s", path, _reason(exc))


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)
