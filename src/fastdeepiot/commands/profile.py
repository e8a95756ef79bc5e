"""CLI verbs for profile."""

from fastdeepiot.cli import app  # noqa: F401
