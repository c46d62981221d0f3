"""User-facing errors.

Every error a user can cause (bad input, a wrong or tampered bundle, a checkpoint that
does not load) derives from :class:`IplapError`. The CLI prints its message on one line
and exits with code 2; anything else is a bug and keeps its traceback.
"""


class IplapError(Exception):
    """A problem with the user's input, files or environment, stated in one line."""


class CheckpointError(IplapError):
    """A checkpoint file is missing, unreadable, unsafe, or does not fit the model."""


class BundleError(IplapError):
    """A model bundle is missing, incomplete, tampered with, or of another format."""


class MediaError(IplapError):
    """An audio, image or video input cannot be used."""


class NoFaceError(IplapError):
    """No face was found where one is needed."""


class BackendError(IplapError):
    """An inference backend is missing or cannot run the requested configuration."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (libraries' messages run on for
    pages), or its type's name when it has none: what a one-line error quotes."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
