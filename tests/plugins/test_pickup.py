"""The pickup plugin: files byte for byte, envelope lines, safe names, and where it may write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import plugins.pickup as pickup_module
from plugins.pickup import PickupDelivery
from smtpsite.delivery import (
    DeliveryError,
    DeliveryResult,
    OptionsError,
    PluginContext,
    ServerAddress,
)
from tests.plugins.conftest import outgoing

ADDRESS = ServerAddress("pickup", "localhost", 25)


def make(directory: Path | str, context: PluginContext) -> PickupDelivery:
    options = PickupDelivery.clean_options({"directory": str(directory)}, context)
    return PickupDelivery(ADDRESS, options, context)


def errors_for(options: dict, context: PluginContext) -> dict[str, str]:
    with pytest.raises(OptionsError) as info:
        PickupDelivery.clean_options(options, context)
    return info.value.errors


@pytest.fixture(params=["unnamed", "named"])
def file_kind(request, monkeypatch) -> str:
    """Both ways a file is made: unnamed (O_TMPFILE, Linux) and under a hidden temporary name
    (file systems without unnamed files)."""
    assert pickup_module._UNNAMED, "this Linux machine should create unnamed files"
    if request.param == "named":
        monkeypatch.setattr(pickup_module, "_UNNAMED", 0)
    return request.param


def test_file_is_envelope_lines_then_the_message_byte_for_byte(pickup_root, pickup_context,
                                                              file_kind):
    folder = pickup_root / "mail"
    message = outgoing(recipients=("to@example.com", "cc@example.com"), bcc=("hidden@example.com",))
    [result] = make(folder, pickup_context).send_messages([message])
    assert result.ok, result.error
    [path] = folder.iterdir()
    assert path.suffix == ".eml" and len(path.stem) == 36  # a uuid
    assert path.read_bytes() == (
        b"X-Sender: sender@example.com\r\n"
        b"X-Receiver: to@example.com\r\n"
        b"X-Receiver: cc@example.com\r\n"
        b"X-Receiver: hidden@example.com\r\n" + message.data
    )
    assert b"\r\nBcc:" not in path.read_bytes() and b"hidden" not in message.data
    assert str(path) in result.reply


def test_many_sends_make_distinct_files_and_leave_no_temporary_ones(pickup_root, pickup_context,
                                                                   file_kind):
    folder = pickup_root / "mail"
    plugin = make(folder, pickup_context)
    messages = [outgoing() for _ in range(5)]
    results = plugin.send_messages(messages[:2]) + plugin.send_messages(messages[2:])
    assert [r.message_id for r in results] == [m.message_id for m in messages]
    assert all(r.ok for r in results)
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 5 and all(n.endswith(".eml") and not n.startswith(".") for n in names)
    contents = {p.read_bytes().split(b"\r\n", 2)[2] for p in folder.iterdir()}
    assert contents == {m.data for m in messages}


def test_an_existing_file_is_never_replaced(pickup_root, pickup_context, monkeypatch, file_kind):
    folder = pickup_root / "mail"
    taken = folder / "00000000-0000-4000-8000-000000000000.eml"
    taken.write_bytes(b"someone else's message")
    # The first final name drawn collides with the existing file; the plugin must pick another.
    real = pickup_module.uuid.uuid4
    # A named file draws its temporary name first, then the colliding final name.
    names = iter([taken.stem] if file_kind == "unnamed" else [real(), taken.stem])
    monkeypatch.setattr(pickup_module.uuid, "uuid4", lambda: next(names, None) or real())
    [result] = make(folder, pickup_context).send_messages([outgoing()])
    assert result.ok, result.error
    assert taken.read_bytes() == b"someone else's message"
    assert len(list(folder.iterdir())) == 2


def test_directory_outside_the_roots_is_refused(tmp_path, pickup_root, pickup_context):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    message = errors_for({"directory": str(outside)}, pickup_context)["directory"]
    assert "must lie under one of the allowed pickup roots" in message
    assert str(pickup_root) in message


def test_dot_dot_escape_is_refused(tmp_path, pickup_root, pickup_context):
    (tmp_path / "elsewhere").mkdir()
    sneaky = f"{pickup_root}/mail/../../elsewhere"
    message = errors_for({"directory": sneaky}, pickup_context)["directory"]
    assert "allowed pickup roots" in message and str(tmp_path / "elsewhere") in message


def test_symlink_escape_is_refused(tmp_path, pickup_root, pickup_context):
    (tmp_path / "elsewhere").mkdir()
    (pickup_root / "link").symlink_to(tmp_path / "elsewhere")
    message = errors_for({"directory": str(pickup_root / "link")}, pickup_context)["directory"]
    assert "allowed pickup roots" in message


def test_symlink_swapped_after_validation_is_refused_at_send_time(tmp_path, pickup_root,
                                                                   pickup_context):
    (pickup_root / "real").mkdir()
    (tmp_path / "elsewhere").mkdir()
    link = pickup_root / "link"
    link.symlink_to(pickup_root / "real")
    plugin = make(link, pickup_context)
    link.unlink()
    link.symlink_to(tmp_path / "elsewhere")
    [result] = plugin.send_messages([outgoing()])
    assert not result.ok and "allowed pickup roots" in result.error.message
    assert not result.error.after_data
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_no_roots_configured_names_the_setting(pickup_root):
    message = errors_for({"directory": str(pickup_root / "mail")}, PluginContext())["directory"]
    assert "SMTPSITE_PICKUP_ROOTS must be set" in message


def test_relative_missing_and_file_paths_are_refused(pickup_root, pickup_context):
    assert errors_for({"directory": "mail"}, pickup_context)["directory"] == "must be an absolute path"
    missing = errors_for({"directory": str(pickup_root / "nope")}, pickup_context)["directory"]
    assert "does not exist" in missing
    (pickup_root / "afile").write_text("x")
    assert errors_for({"directory": str(pickup_root / "afile")}, pickup_context)["directory"] == (
        "is not a directory"
    )
    assert errors_for({}, pickup_context)["directory"] == "is required"


@pytest.mark.parametrize("key", ["security", "ssl", "use_ssl", "use_tls", "starttls",
                                 "verify_certificate", "ca_file", "TLS"])
def test_tls_options_are_refused_with_a_reason(key, pickup_root, pickup_context):
    errors = errors_for({"directory": str(pickup_root / "mail"), key: "ssl"}, pickup_context)
    assert errors == {key: "a pickup directory does not use TLS; remove this option"}


def test_directory_gone_after_validation_is_a_clear_safe_error(pickup_root, pickup_context):
    folder = pickup_root / "mail"
    plugin = make(folder, pickup_context)
    folder.rmdir()
    [result] = plugin.send_messages([outgoing()])
    assert not result.ok and "does not exist" in result.error.message
    assert not result.error.after_data and not result.error.permanent
    check = plugin.check("a@example.com", "b@example.com")
    assert not check.ok and "does not exist" in check.message


def test_directory_replaced_by_a_file_is_a_clear_error(pickup_root, pickup_context):
    # Tests run as root, for whom permissions do not stop writes: a file stands in its place.
    folder = pickup_root / "mail"
    plugin = make(folder, pickup_context)
    folder.rmdir()
    folder.write_text("not a folder")
    [result] = plugin.send_messages([outgoing()])
    assert not result.ok and result.error.message.endswith("is not a directory")
    assert not result.error.after_data


def test_write_failure_is_clear_and_removes_the_temporary_file(pickup_root, file_kind):
    # A real failed write: a child process whose file size limit is smaller than the message.
    folder = pickup_root / "mail"
    child = textwrap.dedent(f"""
        import json, resource, signal
        import plugins.pickup
        if {file_kind!r} == "named":
            plugins.pickup._UNNAMED = 0
        from plugins.pickup import PickupDelivery
        from smtpsite.delivery import PluginContext, ServerAddress
        from tests.plugins.conftest import outgoing
        context = PluginContext(config={{"SMTPSITE_PICKUP_ROOTS": ({str(pickup_root)!r},)}})
        options = PickupDelivery.clean_options({{"directory": {str(folder)!r}}}, context)
        plugin = PickupDelivery(ServerAddress("p", "localhost", 25), options, context)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        [result] = plugin.send_messages([outgoing(body=("x" * 60 + "\\n") * 200)])
        print(json.dumps([result.ok, result.error.message, result.error.after_data]))
    """)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2], env=env)
    assert done.returncode == 0, done.stderr
    ok, message, after_data = json.loads(done.stdout)
    assert not ok and not after_data
    assert message.startswith(f"cannot write a message file in {folder}: File too large")
    assert list(folder.iterdir()) == []


def test_a_directory_that_cannot_be_synced_makes_the_written_messages_uncertain(pickup_root):
    fd = os.open(pickup_root, os.O_RDONLY | os.O_DIRECTORY)
    os.close(fd)  # a closed descriptor: the real fsync fails (EBADF)
    written = DeliveryResult("<a@test>", True, reply="written to /pickup/a.eml")
    refused = DeliveryResult("<b@test>", False, error=DeliveryError("the disk is full"))
    uncertain, unchanged = pickup_module._synced(pickup_root, fd, [written, refused])
    assert not uncertain.ok and uncertain.error.after_data and not uncertain.error.permanent
    assert uncertain.error.message.startswith("/pickup/a.eml was written but")
    assert unchanged is refused


def test_envelope_with_a_line_break_is_refused(pickup_root, pickup_context):
    message = outgoing()
    bad = type(message)(message.message_id, message.sender, ("x@example.com\r\nX-Evil: 1",),
                        message.data)
    folder = pickup_root / "mail"
    [result] = make(folder, pickup_context).send_messages([bad])
    assert not result.ok and result.error.permanent
    assert list(folder.iterdir()) == []


def test_check_writes_nothing_and_leaves_nothing(pickup_root, pickup_context):
    folder = pickup_root / "mail"
    result = make(folder, pickup_context).check("a@example.com", "b@example.com")
    assert result.ok and "nothing was sent" in result.message
    assert list(folder.iterdir()) == []
