"""The sendmail plugin against Debian's msmtp relaying to aiosmtpd, and against failing programs."""

from __future__ import annotations

import pytest

from plugins.sendmail import SendmailDelivery
from smtpsite.delivery import OptionsError, PluginContext, ServerAddress
from tests.plugins.conftest import outgoing
from tests.smtpd import Behaviour

ADDRESS = ServerAddress("localhost", "localhost", 25)
CONTEXT = PluginContext()


def make(path, **options) -> SendmailDelivery:
    cleaned = SendmailDelivery.clean_options({"path": str(path), **options}, CONTEXT)
    return SendmailDelivery(ADDRESS, cleaned, CONTEXT)


def test_message_arrives_through_msmtp_with_the_envelope(msmtp_wrapper, smtp_server):
    program = msmtp_wrapper(smtp_server)
    message = outgoing(recipients=("to@example.com",), bcc=("-hidden@example.com",))
    [result] = make(program).send_messages([message])
    assert result.ok, result.error
    [received] = smtp_server.messages
    assert received.mail_from == "sender@example.com"
    # "--" keeps a recipient that starts with "-" from being read as an option.
    assert received.rcpt_tos == ["to@example.com", "-hidden@example.com"]
    assert received.data == message.data


def test_a_batch_runs_the_program_once_per_message(msmtp_wrapper, smtp_server):
    messages = [outgoing(), outgoing(), outgoing()]
    results = make(msmtp_wrapper(smtp_server)).send_messages(messages)
    assert [r.message_id for r in results] == [m.message_id for m in messages]
    assert all(r.ok for r in results)
    assert [r.data for r in smtp_server.messages] == [m.data for m in messages]


def test_msmtp_refusal_of_the_recipient_is_permanent(msmtp_wrapper, start_server):
    server = start_server(behaviour=Behaviour(rcpt_reply="550 5.1.1 no such user"))
    [result] = make(msmtp_wrapper(server)).send_messages([outgoing()])
    error = result.error
    assert not result.ok and error.permanent and not error.after_data
    assert error.code == 65 and "550 5.1.1 no such user" in error.message
    assert server.messages == []


def test_msmtp_temporary_refusal_is_not_permanent(msmtp_wrapper, start_server):
    server = start_server(behaviour=Behaviour(rcpt_reply="451 4.3.0 try again later"))
    [result] = make(msmtp_wrapper(server)).send_messages([outgoing()])
    assert not result.ok and not result.error.permanent and not result.error.after_data
    assert "451 4.3.0 try again later" in result.error.message


@pytest.mark.parametrize(("status", "permanent"), [(75, False), (67, True), (68, True), (65, True),
                                                   (1, False)])
def test_exit_status_decides_permanence(script, status, permanent):
    program = script("failing", f"cat >/dev/null\necho 'first line' >&2\necho '  reason {status}  ' >&2\n"
                                f"exit {status}\n")
    [result] = make(program).send_messages([outgoing()])
    error = result.error
    assert not result.ok and error.code == status
    assert error.permanent is permanent and not error.after_data
    assert error.message == (
        f"{program} exited with status {status}"
        + {75: " (temporary failure)", 1: ""}.get(status, " (permanent failure)")
        + f": first line | reason {status}"
    )


def test_arguments_and_stdin_are_passed_without_a_shell(script, tmp_path):
    record = tmp_path / "args"
    program = script("recorder", f'for a in "$@"; do echo "[$a]"; done > {record}\n'
                                 f"cat > {record}.data\n")
    message = outgoing(recipients=("a@example.com", "b c;$(reboot)@example.com"))
    [result] = make(program).send_messages([message])
    assert result.ok and result.reply == f"accepted by {program}"
    assert record.read_text().splitlines() == [
        "[-i]", "[-f]", "[sender@example.com]", "[--]", "[a@example.com]",
        "[b c;$(reboot)@example.com]",
    ]
    assert (tmp_path / "args.data").read_bytes() == message.data


def test_a_hanging_program_is_stopped_and_may_have_the_message(script):
    # The message fits in the pipe: the program has all of it, so it might have queued it.
    program = script("hang", "exec sleep 30\n")
    [result] = make(program, timeout=1).send_messages([outgoing()])
    error = result.error
    assert not result.ok and error.after_data and not error.permanent
    assert "did not finish within 1 seconds" in error.message
    assert "may have queued it" in error.message


def test_a_program_that_hangs_before_reading_everything_is_safe_to_retry(script):
    # Far larger than a pipe holds and never read: the program cannot have the whole message.
    program = script("hang-unread", "sleep 30\n")
    big = outgoing(body=("y" * 70 + "\n") * 20000)
    [result] = make(program, timeout=1).send_messages([big])
    assert not result.ok and not result.error.after_data
    assert "may have queued" not in result.error.message


def test_a_program_killed_by_a_signal_may_have_queued(script):
    program = script("killed", "cat >/dev/null\nkill -9 $$\n")
    [result] = make(program).send_messages([outgoing()])
    assert not result.ok and result.error.after_data
    assert "killed by signal 9" in result.error.message


def test_a_program_gone_after_validation_is_a_clear_safe_error(script):
    program = script("vanishing", "exit 0\n")
    plugin = make(program)
    program.unlink()
    [result] = plugin.send_messages([outgoing()])
    assert not result.ok and not result.error.after_data
    assert result.error.message.startswith(f"cannot run {program}: No such file")
    check = plugin.check("a@example.com", "b@example.com")
    assert not check.ok and check.message == f"{program} does not exist"


def test_options_are_validated(script, tmp_path):
    def errors(options):
        with pytest.raises(OptionsError) as info:
            SendmailDelivery.clean_options(options, CONTEXT)
        return info.value.errors

    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    assert errors({"path": "sendmail"}) == {"path": "must be an absolute path"}
    assert errors({"path": str(tmp_path / "nope")}) == {"path": "does not exist"}
    assert errors({"path": str(tmp_path)}) == {"path": "is not a file"}
    assert errors({"path": str(plain)}) == {"path": "is not executable"}
    assert errors({"path": str(script("ok", "")), "timeout": "0"}) == {"timeout": "must be at least 1"}
    assert errors({"path": str(script("ok2", "")), "ssl": "on"}) == {
        "ssl": "unknown option for the sendmail method"
    }
    cleaned = SendmailDelivery.clean_options({"path": str(script("ok3", ""))}, CONTEXT)
    assert cleaned["timeout"] == 60.0
    assert SendmailDelivery.fields[0].default == "/usr/sbin/sendmail"


def test_check_runs_nothing(script, tmp_path):
    marker = tmp_path / "ran"
    program = script("marker", f"touch {marker}\n")
    result = make(program).check("a@example.com", "b@example.com")
    assert result.ok and "nothing was sent" in result.message
    assert not marker.exists()
