"""The error types for bad input, so that users see what is wrong and where, not a traceback,
and what their messages share: :func:`quote` (file content, cut at ``QUOTE_LIMIT``
characters) and :func:`listed` (the first names of a long list)."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence


class FerlitError(ValueError):
    """Bad input to ferlit: the message names the file (and line) or option, and what was expected."""


class DataError(FerlitError):
    """A data set on disk does not have the layout or content ferlit expects."""


class ConfigError(FerlitError):
    """An option or config value is not acceptable."""


class WeightsError(FerlitError):
    """A weights file cannot be loaded into the chosen backbone."""


class DataWarning(UserWarning):
    """Data that ferlit can use but the user should know about (e.g. a video with no face
    image at all); shown once per message, and filterable by this category."""


@contextlib.contextmanager
def data_warnings_as_lines() -> Iterator[None]:
    """Within: a ``DataWarning`` prints as ``warning: <message>`` on stderr, as the commands
    print their errors (Python's default adds the file, line and source of the ``warn`` call,
    which say nothing to a user); other warnings print as Python shows them."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, DataWarning):
            print(f"warning: {message}", file=sys.stderr if file is None else file)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


@contextlib.contextmanager
def quiet_closed_stdout() -> Iterator[None]:
    """Within: a reader that closes the pipe early (``ferlit.data stats --json | head -1``) ends
    the command quietly with exit status 1, not a ``BrokenPipeError`` traceback.

    This is the recipe of Python's documentation (library/signal, "Note on SIGPIPE"): stdout is
    pointed at ``os.devnull`` so that the interpreter's own flush at exit cannot raise again.
    ``BrokenPipeError`` is an ``OSError``: the commands' ``except OSError`` lines let it through.
    """
    try:
        try:
            yield
        finally:  # also after argparse's --help, which exits with the text still buffered
            sys.stdout.flush()
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)


#: How much offending file content an error message quotes: enough to recognise the text, and a
#: 5 MB line (a file with no line breaks) is never echoed whole into a terminal or a log.
QUOTE_LIMIT = 100


def quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``repr`` of at most ``limit`` characters of ``text`` (file content in an error message), with
    the full length said when it is cut."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def listed(names: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` of ``names`` joined by commas, then "and N more" for the rest: a long
    list of videos or files named in one message without flooding the terminal."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class TrainingDiverged(FerlitError):
    """The loss became NaN or infinite; the message names the step."""


def user_message(error: FerlitError) -> str:
    """The message a user should read: for an error re-raised from a DataLoader worker, the
    original message (torch wraps it in the worker's traceback), else the message itself."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    marker = f"{type(error).__module__}.{type(error).__qualname__}: "
    where = text.rfind(marker)
    # torch's first line is "Caught <ExceptionClass> in DataLoader worker process <n>."; the
    # class name is ferlit's internals (it read "... (ImageError in DataLoader worker process 0)").
    origin = text.splitlines()[0].removeprefix("Caught ").rstrip(".")
    origin = origin.split(" ", 1)[1] if origin.startswith(f"{type(error).__name__} ") else origin
    return f"{text[where + len(marker) :].strip()} (raised {origin})" if where >= 0 else text


def counted(n: int, noun: str) -> str:
    """``"1 thread"``, ``"2 threads"``: a count and its noun, plural by adding s."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
