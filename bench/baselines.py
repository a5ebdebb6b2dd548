"""What a Python developer would otherwise use: smtplib and Django's mail backends."""

from __future__ import annotations

import smtplib

from bench.messages import RECIPIENT, SENDER, SUBJECT, TEXT, raw_message, recipient


def smtplib_raw(host: str, port: int, count: int) -> None:
    """Pre-serialised bytes over one reused connection: the Python limit."""
    with smtplib.SMTP(host, port, local_hostname="localhost") as smtp:
        for n in range(count):
            smtp.sendmail(SENDER, [RECIPIENT], raw_message(n))


def _django(host: str, port: int) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST=host, EMAIL_PORT=port, DEFAULT_CHARSET="utf-8",
        )
        django.setup()
    settings.EMAIL_HOST, settings.EMAIL_PORT = host, port


def django_send_mail(host: str, port: int, count: int) -> None:
    """Django's ``send_mail`` per call: a new connection for every message."""
    _django(host, port)
    from django.core.mail import send_mail

    for n in range(count):
        send_mail(SUBJECT, TEXT, SENDER, [recipient(n)])


def django_messages(count: int):
    """The same messages as Django ``EmailMessage`` objects."""
    from django.core.mail import EmailMessage

    return [EmailMessage(SUBJECT, TEXT, SENDER, [RECIPIENT]) for _ in range(count)]


def django_send_messages(host: str, port: int, count: int) -> None:
    """Django's SMTP backend ``send_messages``: one connection for the whole batch."""
    _django(host, port)
    from django.core.mail import get_connection

    messages = django_messages(count)
    with get_connection() as connection:
        connection.send_messages(messages)
