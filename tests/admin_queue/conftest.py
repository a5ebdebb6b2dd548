"""Fixtures for the queue's admin screens: the admin tests' panel, people and sites."""

from tests.admin.conftest import alice, panel, password_hash, root, world  # noqa: F401
