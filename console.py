"""How the command line talks and stops, the same for every subcommand.

Talking. Messages go to stderr (stdout is for what a command reports, ``--json``): the
runtime says each stage it starts through :mod:`logging` (``iplap.*`` loggers at INFO), which
:func:`configure_logging` prints as ``iplap: message``; ``-q`` keeps only warnings and errors,
and no progress bars. :func:`say` is the command's own voice.

Stopping. :func:`handling_signals` turns SIGINT (Ctrl-C) and SIGTERM into exceptions that
unwind the command (so what it was writing is removed: no half-written output) and exit with
130 and 143. A signal that arrives while C code holds the interpreter inside a callback (PyAV
reading a face video out of an avatar file swallows it there) is not lost: it is also
recorded, and :func:`checkpoint`, called between frames, raises it again.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading

#: Exit codes: a user error, Ctrl-C, SIGTERM (128 + the signal's number, as shells report it).
EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 130, 143

_quiet = False
_pending: list[BaseException] = []
_lock = threading.Lock()


class Terminated(BaseException):
    """SIGTERM: stop now (a BaseException, as KeyboardInterrupt, so no ``except Exception`` eats it)."""


class _IplapFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"iplap: {record.levelname.lower()}: {message}"
        return f"iplap: {message}" if record.levelno == logging.INFO else f"{record.name}: {message}"


class _StderrHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record comes (not the stream of the
    moment it was made: a caller that swaps stderr, as a test's capture does, is followed)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """iplap's stage messages on stderr (INFO), debug with ``verbose``, warnings only with ``quiet``.
    Records still reach the root logger's handlers (an application's, a test's capture); a
    command-line run's root gets a handler that drops them, so that a library that calls
    ``logging.basicConfig`` as it runs (onnxruntime's quantizer does) cannot print each of
    them a second time."""
    global _quiet
    _quiet = quiet and not verbose
    handler = _StderrHandler()
    handler.setFormatter(_IplapFormatter())
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING if _quiet else logging.INFO)
    logger = logging.getLogger("iplap")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)  # -q quiets the handler only
    root = logging.getLogger()
    if not root.handlers:  # basicConfig() does nothing once the root has a handler
        root.addHandler(logging.NullHandler())


def quiet() -> bool:
    return _quiet


def say(message: str) -> None:
    """A line of the command's own on stderr (not with ``-q``)."""
    if not _quiet:
        print(f"iplap: {message}", file=sys.stderr, flush=True)


def checkpoint() -> None:
    """Raise the Ctrl-C or SIGTERM that came since the last checkpoint, if any (call between frames)."""
    with _lock:
        if _pending:
            raise _pending.pop(0)


def _handler(signum, frame):
    exc = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    with _lock:
        _pending.append(exc)
    raise exc


@contextlib.contextmanager
def handling_signals():
    """SIGINT and SIGTERM raise KeyboardInterrupt and :class:`Terminated` for the block (in the
    main thread; elsewhere the block runs as it is). The previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        with _lock:
            _pending.clear()


__all__ = ["EXIT_INTERRUPTED", "EXIT_TERMINATED", "EXIT_USAGE", "Terminated", "checkpoint", "configure_logging",
           "handling_signals", "quiet", "say"]
