"""CLI verbs for compress."""

from fastdeepiot.cli import app  # noqa: F401
