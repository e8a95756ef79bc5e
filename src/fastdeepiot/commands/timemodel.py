"""CLI verbs for timemodel."""

from fastdeepiot.cli import app  # noqa: F401
