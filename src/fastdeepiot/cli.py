"""Command line: thin wrappers over the library. Errors the user can fix exit 2 with one line."""

from __future__ import annotations

import sys

import typer

from fastdeepiot.commands import baseline as baseline_commands
from fastdeepiot.commands import compress as compress_commands
from fastdeepiot.commands import profile as profile_commands
from fastdeepiot.commands import tasks as tasks_commands
from fastdeepiot.commands import timemodel as timemodel_commands
from fastdeepiot.errors import UserError

app = typer.Typer(
    name="fastdeepiot",
    help="Profile a device, learn its execution-time model, predict and compress PyTorch networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each commands module collects its verbs on a Typer of its own; the one app takes them in this order.
for _module in (profile_commands, timemodel_commands, tasks_commands, compress_commands, baseline_commands):
    app.registered_commands.extend(_module.app.registered_commands)


def main(argv: list[str] | None = None) -> int:
    """Entry point. Usage errors exit 2 (typer), `UserError`s exit 2 with one line, bugs exit 1."""
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
