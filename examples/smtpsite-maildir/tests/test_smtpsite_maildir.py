"""Tests of the Maildir plugin: smtpsite's contract kit, then delivery read back with ``mailbox``."""

from __future__ import annotations

import mailbox
import os
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from smtpsite_maildir import MaildirDelivery

from smtpsite.delivery import OptionsError, OutgoingMessage, PluginContext, ServerAddress
from smtpsite.testing import DeliveryMethodContract, ReceivedMail

SERVER = ServerAddress("localhost:25", "localhost", 25)


def read_maildir(directory: Path) -> list[ReceivedMail]:
    """Every message in ``directory``'s new/, split into the envelope lines and the message."""
    if not (directory / "new").is_dir():
        return []
    mails = []
    for path in (directory / "new").iterdir():
        data = path.read_bytes()
        sender, recipients = "", []
        while data.startswith((b"Return-Path: ", b"Delivered-To: ")):
            line, data = data.split(b"\n", 1)
            name, value = line.decode().split(": ", 1)
            if name == "Return-Path":
                sender = value.removeprefix("<").removesuffix(">")
            else:
                recipients.append(value)
        mails.append(ReceivedMail(sender, tuple(recipients), data))
    return mails


class TestMaildirContract(DeliveryMethodContract):
    """The kit against an existing Maildir."""

    plugin_class = MaildirDelivery

    @pytest.fixture(autouse=True)
    def _maildir(self, tmp_path: Path):
        self.root = tmp_path / "root"
        self.maildir = self.root / "Maildir"
        for sub in ("tmp", "new", "cur"):
            (self.maildir / sub).mkdir(parents=True)
        (tmp_path / "outside").mkdir()
        self.outside = tmp_path / "outside"

    def plugin_context(self):
        return PluginContext(config={"SMTPSITE_PICKUP_ROOTS": (self.root,)})

    def valid_options(self):
        return {"path": str(self.maildir)}

    def get_mailbox_content(self):
        return read_maildir(self.maildir)

    def flush_mailbox(self):
        if (self.maildir / "new").is_dir():
            for path in (self.maildir / "new").iterdir():
                path.unlink()

    def invalid_options(self):
        return [
            ({"path": "Maildir"}, "path", "absolute"),
            ({"path": str(self.outside)}, "path", "allowed pickup roots"),
            ({"path": str(self.root / "missing")}, "path", "does not exist"),
            ({"path": str(self.root)}, "path", "is not a Maildir"),
            ({"folder": "Archive"}, "folder", "is not a Maildir"),
            ({"folder": "../escape"}, "folder", "single dots"),
            ({"folder": "a/b"}, "folder", "single dots"),
        ]


class TestMaildirFolderContract(TestMaildirContract):
    """The kit again, delivering to a folder of a Maildir that ``create`` makes on first use."""

    @pytest.fixture(autouse=True)
    def _maildir(self, tmp_path: Path):
        self.root = tmp_path / "root"
        self.root.mkdir()
        self.base = self.root / "Maildir"
        self.maildir = self.base / ".Lists.smtpsite"
        self.outside = tmp_path

    def valid_options(self):
        return {"path": str(self.base), "create": "true", "folder": "Lists.smtpsite"}

    def invalid_options(self):
        return [({"path": str(self.root / "no" / "Maildir")}, "path", "no parent folder")]


# -- delivery, read back with the standard library ------------------------------------------
def message(subject: str = "Hello", *, body: str = "First line.\n.dotted line\nLast.\n",
            recipients: tuple[str, ...] = ("to@example.com", "bcc@example.com")) -> OutgoingMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = "Sender <sender@example.com>"
    msg["To"] = recipients[0]
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@test.example.com>"
    msg.set_content(body, cte="7bit")
    return OutgoingMessage(msg["Message-ID"], "sender@example.com", recipients, msg.as_bytes())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "mail-root"
    folder.mkdir()
    return folder


def make(root: Path, **options) -> MaildirDelivery:
    context = PluginContext(config={"SMTPSITE_PICKUP_ROOTS": (root,)})
    return MaildirDelivery(SERVER, MaildirDelivery.clean_options(options, context), context)


def test_a_message_is_read_back_by_mailbox_maildir_byte_for_byte(root):
    plugin = make(root, path=str(root / "Maildir"), create=True)
    sent = message()
    [result] = plugin.send_messages([sent])
    assert result.ok and result.reply.startswith("delivered as new/")

    box = mailbox.Maildir(root / "Maildir", factory=None, create=False)
    [key] = box.keys()
    assert box.get_bytes(key) == (
        b"Return-Path: <sender@example.com>\n"
        b"Delivered-To: to@example.com\n"
        b"Delivered-To: bcc@example.com\n" + sent.data.replace(b"\r\n", b"\n")
    )
    received = box.get_message(key)
    assert received.get_subdir() == "new"
    assert received["Subject"] == "Hello" and "Bcc" not in received
    assert received.get_payload() == "First line.\n.dotted line\nLast.\n"
    assert result.reply == f"delivered as new/{key}"


def test_files_are_private_and_tmp_is_left_empty(root):
    plugin = make(root, path=str(root / "Maildir"), create=True)
    assert all(r.ok for r in plugin.send_messages([message("One"), message("Two")]))
    new = list((root / "Maildir" / "new").iterdir())
    assert len(new) == 2 and not list((root / "Maildir" / "tmp").iterdir())
    assert {p.stat().st_mode & 0o777 for p in new} == {0o600}
    assert (root / "Maildir").stat().st_mode & 0o777 == 0o700


def test_unique_names_follow_the_maildir_spec(root):
    plugin = make(root, path=str(root / "Maildir"), create=True)
    plugin.send_messages([message(f"Message {i}") for i in range(20)])
    names = [p.name for p in (root / "Maildir" / "new").iterdir()]
    assert len(set(names)) == 20
    for name in names:
        seconds, _, rest = name.partition(".")
        assert seconds.isdigit() and f"P{os.getpid()}Q" in rest
        assert ":" not in name and "/" not in name and not name.startswith(".")


def test_a_folder_is_a_maildir_plus_plus_folder(root):
    plugin = make(root, path=str(root / "Maildir"), create=True, folder="Archive")
    plugin.send_messages([message("Archived")])
    box = mailbox.Maildir(root / "Maildir", factory=None, create=False)
    assert box.list_folders() == ["Archive"] and len(box) == 0
    [mail] = box.get_folder("Archive")
    assert mail["Subject"] == "Archived"
    assert (root / "Maildir" / ".Archive" / "maildirfolder").is_file()


def test_without_create_nothing_is_created(root):
    error = pytest.raises(OptionsError, make, root, path=str(root / "Maildir")).value
    assert error.errors == {"path": "does not exist; create the Maildir first or turn on 'create'"}
    assert not (root / "Maildir").exists()


def test_the_check_creates_and_delivers_nothing(root):
    plugin = make(root, path=str(root / "Maildir"), create=True)
    result = plugin.check("sender@example.com", "to@example.com")
    assert result.ok and "will be created at the first delivery" in result.message
    assert not (root / "Maildir").exists()
    plugin.send_messages([message()])
    result = plugin.check("sender@example.com", "to@example.com")
    assert result.ok and "is a writable Maildir" in result.message
    assert len(list((root / "Maildir" / "new").iterdir())) == 1
    assert not list((root / "Maildir" / "tmp").iterdir())


def test_a_symlink_swapped_in_after_validation_is_refused_at_send_time(root, tmp_path):
    plugin = make(root, path=str(root / "Maildir"), create=True)
    elsewhere = tmp_path / "elsewhere"
    for sub in ("tmp", "new", "cur"):
        (elsewhere / sub).mkdir(parents=True)
    (root / "Maildir").symlink_to(elsewhere)
    [result] = plugin.send_messages([message()])
    assert not result.ok and "must lie under one of the allowed pickup roots" in result.error.message
    assert not result.error.after_data and not list((elsewhere / "new").iterdir())


def test_a_symlinked_subfolder_is_refused(root, tmp_path):
    maildir = root / "Maildir"
    for sub in ("tmp", "cur"):
        (maildir / sub).mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (maildir / "new").symlink_to(tmp_path / "elsewhere")
    error = pytest.raises(OptionsError, make, root, path=str(maildir)).value
    assert "must not lead through a symbolic link" in error.errors["path"]


def test_a_line_break_in_an_envelope_address_is_a_permanent_failure(root):
    plugin = make(root, path=str(root / "Maildir"), create=True)
    bad = OutgoingMessage("<x@test>", "sender@example.com", ("to@example.com\nBcc: x@evil",),
                          b"Subject: x\r\n\r\nbody\r\n")
    good = message()
    bad_result, good_result = plugin.send_messages([bad, good])
    assert not bad_result.ok and bad_result.error.permanent and not bad_result.error.after_data
    assert good_result.ok  # one bad message does not stop the batch
    assert len(read_maildir(root / "Maildir")) == 1


def test_no_pickup_roots_means_no_maildir(root):
    with pytest.raises(OptionsError, match="no pickup roots are configured"):
        MaildirDelivery.clean_options({"path": str(root)}, PluginContext())
