"""The delivery plugin interface: what a delivery method declares and implements.

A plugin is a subclass of :class:`DeliveryMethod` named by an entry point in the group
``smtpsite.delivery_methods``. It declares its form fields as plain data (:class:`Field`);
smtpsite validates options against them, encrypts the secret ones and builds admin forms
from them. Plugins import this module and nothing else of smtpsite.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from smtpsite.secrets import Secret

__all__ = [
    "FIELD_TYPES",
    "CheckResult",
    "DeliveryError",
    "DeliveryMethod",
    "DeliveryResult",
    "Field",
    "OptionsError",
    "OutgoingMessage",
    "PluginContext",
    "Secret",
    "ServerAddress",
]

FIELD_TYPES = frozenset({"string", "text", "integer", "float", "boolean", "choice", "path"})
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Field:
    """One option of a delivery method, declared as data; the panel turns it into a form field."""

    name: str
    label: str
    type: str = "string"
    required: bool = False
    default: Any = None
    choices: tuple[tuple[str, str], ...] = ()
    help: str = ""
    secret: bool = False
    min_value: float | None = None
    max_value: float | None = None
    # Show (and validate) this field only while another field has one of these values,
    # e.g. ``("auth", ("password",))``.
    show_if: tuple[str, tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"field name {self.name!r} is not an identifier")
        if self.type not in FIELD_TYPES:
            raise ValueError(f"field {self.name!r}: unknown type {self.type!r}")
        if self.type == "choice" and not self.choices:
            raise ValueError(f"field {self.name!r}: a choice field needs choices")
        if self.secret and self.type not in {"string", "text"}:
            raise ValueError(f"field {self.name!r}: only string or text fields can be secret")

    def coerce(self, raw: Any) -> Any:
        """Turn a raw value (from a form, the CLI or JSON) into this field's type.

        Raises ``ValueError`` with a message fit to show next to the field. A secret
        field's value comes back as a ``Secret``.
        """
        if isinstance(raw, Secret):
            raw = raw.reveal()
        if raw is None or (isinstance(raw, str) and raw.strip() == "" and self.type != "boolean"):
            return None
        if self.type == "boolean":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError("must be true or false")
        if self.type in {"integer", "float"}:
            value = _number(raw, integer=self.type == "integer")
            if self.min_value is not None and value < self.min_value:
                raise ValueError(f"must be at least {_fmt(self.min_value)}")
            if self.max_value is not None and value > self.max_value:
                raise ValueError(f"must be at most {_fmt(self.max_value)}")
            return value
        if not isinstance(raw, str):
            raise ValueError("must be text")
        if self.type == "choice":
            allowed = [value for value, _label in self.choices]
            if raw not in allowed:
                raise ValueError("must be one of: " + ", ".join(allowed))
            return raw
        if self.type != "text" and ("\n" in raw or "\r" in raw):
            raise ValueError("must be a single line")
        if "\x00" in raw:
            raise ValueError("must not contain NUL characters")
        # Secret values stay wrapped, so a plugin's options never show them in a repr.
        return Secret(raw) if self.secret else raw.strip()

    def is_active(self, options: Mapping[str, Any]) -> bool:
        """Whether this field applies, given the other options (see ``show_if``)."""
        if self.show_if is None:
            return True
        other, values = self.show_if
        return options.get(other) in values


def _number(raw: Any, *, integer: bool) -> float | int:
    if isinstance(raw, bool):
        raise ValueError("must be a number")
    try:
        value = float(raw) if not isinstance(raw, int) else raw
    except (TypeError, ValueError):
        raise ValueError("must be a whole number" if integer else "must be a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("must be a whole number")
        return int(value)
    return float(value)


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


class OptionsError(ValueError):
    """Options did not validate; ``errors`` maps a field name (or ``""``) to its message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{k}: {v}" if k else v for k, v in self.errors.items()))


@dataclass(frozen=True)
class ServerAddress:
    """Where a server is: the host and port parsed from its server name."""

    name: str
    host: str
    port: int


@dataclass(frozen=True)
class PluginContext:
    """What smtpsite tells a plugin about its surroundings (configuration values)."""

    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pickup_roots(self) -> tuple[Path, ...]:
        """Directories under which pickup-style plugins may write."""
        roots = self.config.get("SMTPSITE_PICKUP_ROOTS") or ()
        return tuple(Path(r) for r in roots)


@dataclass(frozen=True)
class OutgoingMessage:
    """A message ready to go: the envelope and the bytes, serialised once."""

    message_id: str
    sender: str
    recipients: tuple[str, ...]
    # The serialised message with CRLF line ends and no Bcc header.
    data: bytes
    # True when an address needs SMTPUTF8 (a non-ASCII local part).
    smtputf8: bool = False


class DeliveryError(Exception):
    """A send or check failed. The flags tell smtpsite what it may safely do next.

    - ``permanent``: the server rejected the message for good (5xx for every recipient);
      another server would not help.
    - ``after_data``: the failure came after the whole message was sent (after the final
      ``.``); the server may have accepted it, so it must not be sent elsewhere.
    - otherwise the message was certainly not accepted and may go to another server.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        permanent: bool = False,
        after_data: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.permanent = permanent
        self.after_data = after_data

    def __repr__(self) -> str:
        flags = [n for n in ("permanent", "after_data") if getattr(self, n)]
        return f"DeliveryError({self.message!r}, code={self.code!r}, flags={flags})"


@dataclass
class DeliveryResult:
    """What happened to one message of a batch."""

    message_id: str
    ok: bool
    code: int | None = None
    reply: str = ""
    # Recipients the server refused while accepting the others: address -> (code, reply).
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    error: DeliveryError | None = None


@dataclass
class CheckResult:
    """The outcome of a connection check, with the dialogue (credentials masked)."""

    ok: bool
    message: str
    transcript: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class DeliveryMethod(ABC):
    """Base class of every delivery plugin, built-in or third party."""

    #: Unique name, stored on each server record (e.g. ``"network"``).
    name: ClassVar[str]
    #: Human label for the panel.
    label: ClassVar[str]
    #: One sentence shown under the method choice.
    description: ClassVar[str] = ""
    #: The options this method takes.
    fields: ClassVar[tuple[Field, ...]] = ()

    def __init__(
        self, server: ServerAddress, options: Mapping[str, Any], context: PluginContext
    ) -> None:
        self.server = server
        self.options = dict(options)
        self.context = context

    def __repr__(self) -> str:
        # Options may hold secrets: name only what is safe.
        return f"<{type(self).__name__} {self.server.name!r}>"

    # -- options ---------------------------------------------------------------------
    @classmethod
    def clean_options(cls, options: Mapping[str, Any], context: PluginContext) -> dict[str, Any]:
        """Check and coerce ``options`` against the declared fields; raise ``OptionsError``.

        Unknown options are rejected, required ones enforced, defaults filled in, then
        :meth:`validate` runs for checks across fields.
        """
        errors: dict[str, str] = {}
        known = {f.name: f for f in cls.fields}
        for key in options:
            if key not in known:
                errors[key] = f"unknown option for the {cls.name} method"
        cleaned: dict[str, Any] = {}
        for fld in cls.fields:
            try:
                value = fld.coerce(options.get(fld.name))
            except ValueError as exc:
                errors[fld.name] = str(exc)
                continue
            cleaned[fld.name] = fld.default if value is None else value
        for fld in cls.fields:
            if fld.name in errors or not fld.is_active(cleaned):
                continue
            if fld.required and cleaned.get(fld.name) in (None, ""):
                errors[fld.name] = "is required"
        if not errors:
            errors.update(cls.validate(cleaned, context))
        if errors:
            raise OptionsError(errors)
        return cleaned

    @classmethod
    def validate(cls, options: dict[str, Any], context: PluginContext) -> dict[str, str]:
        """Checks across fields after coercion; return ``{field: message}`` for each problem."""
        return {}

    @classmethod
    def secret_fields(cls) -> frozenset[str]:
        """Names of the fields whose values are encrypted and never shown again."""
        return frozenset(f.name for f in cls.fields if f.secret)

    # -- connection ------------------------------------------------------------------
    def open(self) -> bool:
        """Open a connection if none is open; return True only if this call opened it."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Close the connection if one is open; never raises for an already closed one."""

    @abstractmethod
    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[DeliveryResult]:
        """Send ``messages`` over one connection; return one result per message, in order."""

    @abstractmethod
    def check(self, sender: str, recipient: str) -> CheckResult:
        """Prove the path to the server works without sending anything."""

    def __enter__(self) -> DeliveryMethod:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
