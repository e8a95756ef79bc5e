"""CLI verbs for tasks."""

from fastdeepiot.cli import app  # noqa: F401
