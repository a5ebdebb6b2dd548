"""Who may sign in to the panel: users, password hashing, Flask-Login, and slowing down guessing."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flask import current_app
from flask_login import LoginManager, UserMixin
from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from smtpsite.addresses import AddressError, check_address
from smtpsite.extensions import db
from smtpsite.models import Site, User, utcnow

MIN_PASSWORD_LENGTH = 10
FIRST_ADMIN_EMAIL = "admin@localhost"
# Compared against when the email is unknown, so both cases cost one hash check.
_DUMMY_HASH = generate_password_hash("not a real password", method="scrypt")

login_manager = LoginManager()
login_manager.login_view = "admin.login_view"
login_manager.login_message = "Please sign in to use the admin panel."
login_manager.login_message_category = "info"


class UserError(ValueError):
    """A user cannot be created or changed as asked."""


class AdminUser(UserMixin):
    """The signed-in user as the panel sees it (loaded once per request)."""

    def __init__(self, user: User) -> None:
        self.id = user.id
        self.email = user.email
        self.is_global_admin = bool(user.is_global_admin)
        self.site_ids = frozenset(site.id for site in user.sites)
        self._active = bool(user.active)
        self._token = session_token(user)

    @property
    def is_active(self) -> bool:
        return self._active

    def get_id(self) -> str:
        # The token changes with the password: changing it signs out every other session.
        return f"{self.id}.{self._token}"

    def __repr__(self) -> str:
        return f"<AdminUser {self.email!r}>"


def session_token(user: User) -> str:
    """A short digest of the password hash, stored in the session cookie."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


@login_manager.user_loader
def load_user(user_id: str) -> AdminUser | None:
    """Flask-Login's loader: the user of a session, if still valid."""
    raw_id, _, token = user_id.partition(".")
    if not raw_id.isdigit():
        return None
    user = db.session.get(User, int(raw_id))
    if user is None or not user.active or not secrets.compare_digest(token, session_token(user)):
        return None
    return AdminUser(user)


def hash_password(password: str) -> str:
    """Hash ``password`` with scrypt."""
    return generate_password_hash(password, method="scrypt")


def check_new_password(password: str) -> str:
    """A password fit to set, or ``UserError`` saying why not."""
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")
    return password


def clean_email(email: str) -> str:
    """A user's email address, checked and lower-cased."""
    email = (email or "").strip().lower()
    if email == FIRST_ADMIN_EMAIL:
        return email
    try:
        return check_address(email).lower()
    except AddressError as exc:
        raise UserError(str(exc)) from None


def find_user(email: str) -> User | None:
    """The user with this email address (case-insensitive), or None."""
    return db.session.execute(
        select(User).where(func.lower(User.email) == email.strip().lower())
    ).scalar_one_or_none()


def create_user(email: str, password: str, *, is_global_admin: bool, sites: Iterable[Site] = ()) -> User:
    """Add a user (the caller commits); a site administrator needs at least one site."""
    email = clean_email(email)
    if find_user(email) is not None:
        raise UserError(f"a user with email {email!r} already exists")
    site_list = list(sites)
    if not is_global_admin and not site_list:
        raise UserError("a site administrator needs at least one site")
    user = User(
        email=email,
        password_hash=hash_password(check_new_password(password)),
        is_global_admin=is_global_admin,
        active=True,
        sites=[] if is_global_admin else site_list,
    )
    db.session.add(user)
    return user


def ensure_first_admin(echo: Callable[[str], None]) -> User | None:
    """On a database with no users, create a global administrator and show its password once.

    The password goes to ``echo`` only (the terminal of ``smtpsite init``), never to a log.
    """
    if db.session.execute(select(func.count()).select_from(User)).scalar_one():
        return None
    password = secrets.token_urlsafe(15)
    user = create_user(FIRST_ADMIN_EMAIL, password, is_global_admin=True)
    db.session.commit()
    echo(
        "Created the first global administrator of the panel (/admin/).\n"
        f"  email:    {FIRST_ADMIN_EMAIL}\n"
        f"  password: {password}\n"
        "This password is shown only this once: sign in and set your own under Users."
    )
    return user


@dataclass
class _Failures:
    count: int = 0
    first_at: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    """Counts failed sign-ins per account and per client address, in this process's memory.

    After ``free_attempts`` failures within ``window`` seconds, each further failure locks
    the key for twice as long as the last (1 s, 2 s, 4 s, ... up to ``max_lock``). While
    locked, sign-in is refused without checking the password. Memory is per process: a
    restart forgets the counts, several processes count separately (each still slows down).
    """

    def __init__(self, free_attempts: int = 5, window: float = 900.0, max_lock: float = 900.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free_attempts = free_attempts
        self.window = window
        self.max_lock = max_lock
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, _Failures] = {}

    def wait(self, keys: Iterable[str]) -> float:
        """Seconds until any of ``keys`` may try again (0 when none is locked)."""
        now = self.clock()
        with self._lock:
            return max((max(0.0, f.locked_until - now) for k in keys
                        if (f := self._failures.get(k)) is not None), default=0.0)

    def failed(self, keys: Iterable[str]) -> None:
        """Count a failed sign-in against every key."""
        now = self.clock()
        with self._lock:
            for key in keys:
                entry = self._failures.get(key)
                if entry is None or now - entry.first_at > self.window:
                    entry = self._failures[key] = _Failures(first_at=now)
                entry.count += 1
                over = entry.count - self.free_attempts
                if over > 0:
                    entry.locked_until = now + min(self.max_lock, 2.0 ** (over - 1))
            if len(self._failures) > 10_000:  # bound memory under a flood of made-up names
                self._failures = {k: v for k, v in self._failures.items()
                                  if now - v.first_at <= self.window}

    def succeeded(self, key: str) -> None:
        """Forget the failures of ``key`` after a good sign-in."""
        with self._lock:
            self._failures.pop(key, None)


def throttle() -> LoginThrottle:
    """The current app's sign-in throttle."""
    return current_app.extensions["smtpsite_admin"].throttle


def authenticate(email: str, password: str, client: str) -> tuple[User | None, str | None]:
    """Check a sign-in; return the user, or None and the message to show."""
    email_key = "account:" + (email or "").strip().lower()
    keys = (email_key, "client:" + client)
    limiter = throttle()
    wait = limiter.wait(keys)
    if wait > 0:
        return None, f"Too many failed sign-ins. Try again in {int(wait) + 1} seconds."
    user = find_user(email or "")
    ok = check_password_hash(user.password_hash if user else _DUMMY_HASH, password or "")
    if user is None or not ok or not user.active:
        limiter.failed(keys)
        return None, "Wrong email or password, or the account is disabled."
    limiter.succeeded(email_key)
    user.last_login_at = utcnow()
    db.session.commit()
    return user, None
