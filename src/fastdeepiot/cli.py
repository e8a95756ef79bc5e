"""Command line: thin wrappers over the library. Errors the user can fix exit 2 with one line."""

from __future__ import annotations

import inspect
import sys
import typing
from pathlib import Path
from typing import Optional

import typer
from typer.models import ParameterInfo

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


def _path_value(value):
    """typer's parser for every file path of every verb: '' is no file (typer's Path('') is '.', the
    working directory, which a command then read or wrote as if the user had named it)."""
    if isinstance(value, str) and value == "":
        raise typer.BadParameter("an empty path; give a file name")
    return value if isinstance(value, Path) else Path(value)


def _refuse_empty_paths(typer_app: typer.Typer) -> None:
    """Give every Path argument and option of every verb `_path_value` as its parser (one rule, here, for
    the verbs written and to come)."""
    for info in typer_app.registered_commands:
        hints = typing.get_type_hints(info.callback)
        for name, param in inspect.signature(info.callback).parameters.items():
            if (isinstance(param.default, ParameterInfo) and param.default.parser is None
                    and hints.get(name) in (Path, Optional[Path])):
                param.default.parser = _path_value


_refuse_empty_paths(app)


def one_line(text: object) -> str:
    """A message on one line (messages quoting user exceptions can span several)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _usage_error(e: BaseException) -> bool:
    """typer's (vendored click) usage errors: bad or missing options and arguments."""
    return hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int)


INTERRUPTED = 130  # 128 + SIGINT, the shell's code for a Ctrl-C
INTERRUPTED_MESSAGE = "error: interrupted; no output was left half-written"


def main(argv: list[str] | None = None) -> int:
    """Entry point. Every bad input (a `UserError`, a failure of the user's code, a bad option) prints
    `error: <one line>` on stderr and exits 2; --help exits 0; Ctrl-C prints `error: interrupted; ...` and
    exits 130; bugs exit 1 with their traceback."""
    try:
        rv = app(args=argv, prog_name="fastdeepiot", standalone_mode=False)
    except KeyboardInterrupt:  # one outside typer's call of the verb (typer turns the others into 130)
        rv = INTERRUPTED
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except SystemExit as e:  # typer's own exits; user code's SystemExit is a UserError by then
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:
        if not _usage_error(e):
            raise
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":  # typer has printed the help already
            return 2
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"error: {one_line(e.format_message())}{where}", file=sys.stderr)
        return 2
    if rv == INTERRUPTED:  # typer's code for a KeyboardInterrupt in a verb; no verb returns 130 itself
        # every file is written to a temporary name and renamed whole (safeio), the temporary ones and
        # compress's staged folder are removed on the way out, a profile keeps the measurements it
        # committed: nothing is left to clean up here
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        return INTERRUPTED
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
