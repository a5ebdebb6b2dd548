"""The small message every sending benchmark sends, built the same way for each sender."""

SENDER = "shop@example.com"
RECIPIENT = "customer@example.com"


def recipient(n: int) -> str:
    """A recipient of its own per message, as real mail has: no cache of checked addresses
    flatters a sender."""
    return f"customer{n}@example.com"
SUBJECT = "Your order 42 has shipped"
TEXT = "Hello,\n\nyour order 42 has shipped and will arrive on Tuesday.\n\nThe Shop\n"


def raw_message(n: int) -> bytes:
    """A pre-serialised message, for the smtplib baseline (the Python limit)."""
    return (
        f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: {SUBJECT}\r\n"
        f"Message-ID: <bench-{n}@example.com>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{TEXT.replace(chr(10), chr(13) + chr(10))}"
    ).encode()
