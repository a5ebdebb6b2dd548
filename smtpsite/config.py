"""Configuration: defaults, then ``SMTPSITE_*`` environment variables, then test overrides."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

ENV_PREFIX = "SMTPSITE_"


def boolean(raw: str) -> bool:
    """An on/off environment value: 1/0, on/off, yes/no, true/false."""
    value = raw.strip().lower()
    if value in ("1", "on", "yes", "true"):
        return True
    if value in ("0", "off", "no", "false"):
        return False
    raise ValueError(raw)


# Keys read from the environment and how each is parsed.
_ENV_PARSERS: dict[str, Any] = {
    "SMTPSITE_DATABASE_URL": str,
    "SMTPSITE_SECRET_KEYS": str,
    "SMTPSITE_PICKUP_ROOTS": str,
    "SMTPSITE_FLASK_SECRET_KEY": str,
    "SMTPSITE_SEND_TIMEOUT": float,
    "SMTPSITE_BUSY_WAIT": float,
    "SMTPSITE_METRICS_ENABLED": boolean,
    "SMTPSITE_METRICS_TOKEN": str,
    "SMTPSITE_HEALTHZ_WORKER_AGE": float,
    "SMTPSITE_HEARTBEAT_SECONDS": float,
    "SMTPSITE_ALERT_EVERY": float,
    "SMTPSITE_CATCHER_ENABLED": boolean,
    "SMTPSITE_CATCHER_PORT": int,
    "SMTPSITE_CATCHER_MAX_SIZE": int,
}


def default_config(instance_path: str) -> dict[str, Any]:
    """Return the built-in defaults for an app whose instance folder is ``instance_path``."""
    return {
        "SMTPSITE_DATABASE_URL": "sqlite:///" + os.path.join(instance_path, "smtpsite.db"),
        "SMTPSITE_SECRET_KEYS": "",
        "SMTPSITE_PICKUP_ROOTS": "",
        "SMTPSITE_FLASK_SECRET_KEY": "",
        # A send that hangs longer than this (seconds) is cancelled and counts as a failure.
        "SMTPSITE_SEND_TIMEOUT": 300.0,
        # How long the send helper waits for a busy server to become free (seconds).
        "SMTPSITE_BUSY_WAIT": 30.0,
        # The built-in mail catcher (127.0.0.1 only), started by ``smtpsite serve``; its port,
        # and the largest message it takes (bytes; larger ones are refused with 552).
        "SMTPSITE_CATCHER_ENABLED": True,
        "SMTPSITE_CATCHER_PORT": 8025,
        "SMTPSITE_CATCHER_MAX_SIZE": 25 * 1024 * 1024,
        # Operations (see smtpsite/ops.py, smtpsite/health.py): /metrics is off unless enabled,
        # and asks for "Authorization: Bearer <token>" when a token is set. /healthz answers
        # 503 when no worker beat within this many seconds (0: no worker needed).
        "SMTPSITE_METRICS_ENABLED": False,
        "SMTPSITE_METRICS_TOKEN": "",
        "SMTPSITE_HEALTHZ_WORKER_AGE": 60.0,
        # How often a worker notes it is alive, and looks for alerts to send (seconds).
        "SMTPSITE_HEARTBEAT_SECONDS": 5.0,
        "SMTPSITE_ALERT_EVERY": 15.0,
        # Load plugins from entry points; tests may pass an explicit list of classes instead.
        "SMTPSITE_PLUGINS": None,
    }


def from_environment(environ: os._Environ[str] | dict[str, str] | None = None) -> dict[str, Any]:
    """Return the ``SMTPSITE_*`` values set in the environment, parsed."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for key, parse in _ENV_PARSERS.items():
        raw = environ.get(key)
        if raw not in (None, ""):
            try:
                values[key] = parse(raw)
            except ValueError as exc:
                raise ValueError(f"{key}={raw!r} is not a valid {parse.__name__}") from exc
    return values


def split_paths(value: str | list[str] | tuple[str, ...] | None) -> tuple[Path, ...]:
    """Turn an ``os.pathsep``-separated string (or a list) into resolved absolute paths."""
    if not value:
        return ()
    parts = value.split(os.pathsep) if isinstance(value, str) else list(value)
    return tuple(Path(p).resolve() for p in parts if str(p).strip())


def ensure_instance_key(instance_path: str) -> str:
    """Read, or create on first run, the Fernet key kept under the instance folder."""
    path = Path(instance_path) / "secret.key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    # Create with owner-only permissions before writing the key into it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key



def ensure_instance_flask_key(instance_path: str) -> str:
    """Read, or create on first run, the Flask session-signing key kept under the instance folder."""
    path = Path(instance_path) / "flask-secret.key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip()
