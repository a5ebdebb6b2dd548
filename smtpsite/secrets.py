"""Encryption of stored secrets (SMTP passwords, DKIM keys) with keys kept outside the database."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

MASK = "********"


class SecretKeyError(RuntimeError):
    """The configured keys cannot decrypt a stored secret, or no key is configured."""


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or logs; ``reveal()`` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the plain value, for the one place that must use it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class SecretBox:
    """Encrypts with the newest key and decrypts with any configured key (MultiFernet)."""

    def __init__(self, keys: str | list[str]) -> None:
        if isinstance(keys, str):
            keys = [k.strip() for k in keys.split(",") if k.strip()]
        if not keys:
            raise SecretKeyError("no encryption key configured: set SMTPSITE_SECRET_KEYS")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except (ValueError, TypeError) as exc:
            # Never echo the key itself: it is the secret.
            raise SecretKeyError(
                "SMTPSITE_SECRET_KEYS holds a value that is not a valid Fernet key "
                "(32 url-safe base64-encoded bytes)"
            ) from exc

    def encrypt(self, plain: str) -> str:
        """Return the token for ``plain``."""
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Return the plain text of ``token``; a wrong key raises ``SecretKeyError``."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretKeyError(
                "a stored secret cannot be decrypted with the configured SMTPSITE_SECRET_KEYS: "
                "the key is wrong, or the one it was encrypted with was removed"
            ) from None

    def rotate(self, token: str) -> str:
        """Re-encrypt ``token`` with the newest key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretKeyError(
                "a stored secret cannot be decrypted with the configured SMTPSITE_SECRET_KEYS"
            ) from None

    def encrypt_mapping(self, values: Mapping[str, Any]) -> str | None:
        """Encrypt a dict of secret option values as one token; ``None`` when it is empty."""
        plain = {k: (v.reveal() if isinstance(v, Secret) else v) for k, v in values.items() if v}
        return self.encrypt(json.dumps(plain, sort_keys=True)) if plain else None

    def decrypt_mapping(self, token: str | None) -> dict[str, Secret]:
        """Decrypt a token made by ``encrypt_mapping`` into ``Secret`` values."""
        if not token:
            return {}
        return {k: Secret(v) for k, v in json.loads(self.decrypt(token)).items()}
