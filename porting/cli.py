"""The convention every `python -m ...` command of the project follows.

- Flags mean the same everywhere: `--classes N`, `--device` (`auto`: CUDA when available),
  `--quiet` (no progress bars, only warnings and errors); every argument has help text.
- A usage error prints `usage` and `<prog>: error: ...` on stderr and exits 2 (argparse).
- A runtime error (`FcnError`, or an `OSError` such as an unwritable output) prints one
  line `error: ...` on stderr and exits 1, never a traceback.
- Messages go through `logging` to stderr; `wrote(path)` reports each file written there,
  so stdout holds only a command's product (a table, a listing).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import torch

from porting.errors import FcnError
from porting.metadata import parse_mean

#: exit statuses: success, runtime error (bad file, unwritable output), usage error (argparse's own)
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def make_parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """An argument parser for `python -m <prog>`.

    Args:
        prog: the module, e.g. "porting.convert"; shown as `python -m porting.convert`.
        description: one paragraph on what the command does.
        epilog: examples or notes printed after the arguments.

    Returns:
        The parser, with help text formatting that keeps the description's line breaks.
    """
    return argparse.ArgumentParser(
        prog=f"python -m {prog}",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0, as a decimal or a fraction ("0.125", "1/8", "1e-3")."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number such as 0.125 or 1/8, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return float(value)


def mean(text: str) -> tuple[float, ...]:
    """argparse type: a per-channel input mean, "B,G,R" (`porting.metadata.parse_mean`)."""
    try:
        return parse_mean(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def bgr_mean(text: str) -> tuple[float, ...]:
    """argparse type: a three-channel input mean, "B,G,R"."""
    values = mean(text)
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers B,G,R, got {text!r}")
    return values


def _number(kind: type, text: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None


def add_classes(parser: argparse.ArgumentParser, default: int | None, what: str = "classes") -> None:
    """`--classes N`: the number of classes, background included."""
    shown = f" (default: {default})" if default is not None else ""
    parser.add_argument(
        "--classes",
        type=positive_int,
        default=default,
        metavar="N",
        help=f"number of {what}, background included{shown}",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    """`--device`: `auto` (default: CUDA when torch sees one, else CPU), `cpu`, `cuda`, `cuda:N`."""
    parser.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="torch device: auto (CUDA when available, else CPU), cpu, cuda or cuda:N (default: auto)",
    )


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """`--quiet`: no progress bars and no informational messages (warnings and errors still show)."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars or progress messages on stderr")


def resolve_device(parser: argparse.ArgumentParser, text: str) -> torch.device:
    """The torch device `--device` names; `auto` picks CUDA when available. A bad name is a usage error.

    Args:
        parser: reports a bad value as a usage error (exit 2).
        text: the flag's value.

    Returns:
        The device.
    """
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        parser.error(f"--device {text!r} is not a torch device (auto, cpu, cuda, cuda:1, ...)")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {text}: no CUDA device is available (use --device cpu or auto)")
    return device


def setup_logging(quiet: bool = False) -> None:
    """Show log messages (modules log to `logging.getLogger(__name__)`) on stderr as bare lines.

    Args:
        quiet: WARNING and up only; otherwise INFO and up.
    """
    root = logging.getLogger()
    root.handlers[:] = [handler for handler in root.handlers if not isinstance(handler, _CommandHandler)]
    handler = _CommandHandler(sys.stderr)
    handler.setFormatter(_LevelFormatter())
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    root.addHandler(handler)
    root.setLevel(min(root.level, handler.level) if root.level else handler.level)


class _CommandHandler(logging.StreamHandler):
    """The stderr handler a command installs (replaced, not stacked, when `main` runs again in-process)."""


class _LevelFormatter(logging.Formatter):
    """`message` for INFO, `warning: message` for warnings, `error: message` for errors."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def wrote(path: str | Path, detail: str = "") -> None:
    """Report a written file on stderr: `wrote PATH` or `wrote PATH: detail` (shown even with --quiet)."""
    print(f"wrote {path}{': ' + detail if detail else ''}", file=sys.stderr, flush=True)


def describe(error: BaseException) -> str:
    """One line for an expected error: an OSError reads `path: reason`, without errno noise."""
    if isinstance(error, OSError) and error.strerror:
        names = [str(name) for name in (error.filename, error.filename2) if name is not None]
        return f"{' -> '.join(names)}: {error.strerror}" if names else error.strerror
    return str(error)


def run(body: Callable[[], object]) -> int:
    """Run a command's body the project's way; returns the exit status.

    Args:
        body: does the work after parsing; an int it returns is the exit status, anything else means success.

    Returns:
        Its status; 1 after printing `error: ...` for an `FcnError` or `OSError`;
        130 on Ctrl-C.
    """
    try:
        status = body()
    except (FcnError, OSError) as error:
        print(f"error: {describe(error)}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr, flush=True)
        return 130
    return status if isinstance(status, int) and not isinstance(status, bool) else EXIT_OK
