"""Command line: thin wrappers over the library. Errors the user can fix exit 2 with one line."""

from __future__ import annotations

import sys

import typer

from fastdeepiot.errors import UserError

app = typer.Typer(
    name="fastdeepiot",
    help="Profile a device, learn its execution-time model, predict and compress PyTorch networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    # Each module adds its verbs to `app`; importing them is cheap (heavy imports live inside verbs).
    from fastdeepiot.commands import profile as _p  # noqa: F401
    from fastdeepiot.commands import timemodel as _t  # noqa: F401
    from fastdeepiot.commands import tasks as _k  # noqa: F401
    from fastdeepiot.commands import compress as _c  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    """Entry point. Usage errors exit 2 (typer), `UserError`s exit 2 with one line, bugs exit 1."""
    _register_commands()
    try:
        app(args=argv, prog_name="fastdeepiot")  # standalone: raises SystemExit with the exit code
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
