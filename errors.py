"""User-facing errors.

Every error a user can cause (bad input, a wrong or tampered bundle, a checkpoint that
does not load) derives from :class:`IplapError`. The CLI prints its message on one line
and exits with code 2; anything else is a bug and keeps its traceback.

:class:`Failure` is how the service and batch report any exception in one line, with
whose fault it is (:class:`Fault`): the caller's, ours, or a worker's that died.
"""

from dataclasses import dataclass
from enum import Enum


class IplapError(Exception):
    """A problem with the user's input, files or environment, stated in one line.

    Where changing a setting would get past the problem, ``setting`` names it as the
    Python API spells it (a config field such as ``"refs"``) and ``suggestion`` is a value
    to try; ``str()`` then ends with that advice. Front ends that spell settings otherwise
    (the CLI's flags) build their own advice from the two, after :attr:`message`.
    """

    def __init__(self, message: str, setting: str | None = None, suggestion: object = None):
        super().__init__(message)
        self.message = message
        self.setting = setting
        self.suggestion = suggestion

    def __reduce__(self):  # keep the setting when pickled (worker processes send errors back)
        return type(self), (self.message, self.setting, self.suggestion)

    def __str__(self) -> str:
        if self.setting is None:
            return self.message
        return f"{self.message} (set {self.setting}={self.suggestion!r})"


class CheckpointError(IplapError):
    """A checkpoint file is missing, unreadable, unsafe, or does not fit the model."""


class BundleError(IplapError):
    """A model bundle is missing, incomplete, tampered with, or of another format."""


class AvatarError(IplapError):
    """An avatar file is missing, foreign, corrupted, or made for another bundle."""


class MediaError(IplapError):
    """An audio, image or video input cannot be used."""


class LimitError(MediaError):
    """An input is larger or longer than a limit the caller set (a service's caps)."""


class NoFaceError(IplapError):
    """No face was found where one is needed."""


class BackendError(IplapError):
    """An inference backend is missing or cannot run the requested configuration."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (libraries' messages run on for
    pages), or its type's name when it has none: what a one-line error quotes."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# -- failures, as the service and batch report them ---------------------------------------------------

class Fault(str, Enum):
    """Whose a failure is: what a front end tells its caller, and whether retrying can help."""

    INPUT = "input"        # the caller's: bad media, no face, a wrong bundle (an IplapError)
    INTERNAL = "internal"  # ours: a bug; its details are in the log
    WORKER = "worker"      # the process or thread that ran it died or hung (retried where possible)


def one_line(text: object) -> str:
    """``text`` on one line, runs of white space as one space."""
    return " ".join(str(text).split())


@dataclass(frozen=True)
class Failure:
    """A failure, said in one line, with whose it is (:class:`Fault`)."""

    fault: Fault
    message: str

    @classmethod
    def of(cls, exc: BaseException, *, details: bool = True) -> "Failure":
        """An exception as the caller hears it. An :class:`IplapError` is the caller's, in its
        own message; anything else is ours: ``internal error (Type: first line)``, or only the
        type where ``details`` is false (a remote client, who must not learn server paths)."""
        if isinstance(exc, IplapError):
            return cls(Fault.INPUT, one_line(exc.message))
        return cls(Fault.INTERNAL, internal_message(exc, details=details))

    @classmethod
    def worker(cls, message: str) -> "Failure":
        return cls(Fault.WORKER, one_line(message))


def internal_message(exc: BaseException, *, details: bool = True) -> str:
    """How a bug is said in one line (its traceback belongs in the log)."""
    if details:
        return one_line(f"internal error ({type(exc).__name__}: {first_line(exc)})")
    return f"internal error ({type(exc).__name__}; see the server's log)"
