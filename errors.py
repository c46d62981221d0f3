"""User-facing errors.

Every error a user can cause (bad input, a wrong or tampered bundle, a checkpoint that
does not load) derives from :class:`IplapError`. The CLI prints its message on one line
and exits with code 2; anything else is a bug and keeps its traceback.
"""


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


class NoFaceError(IplapError):
    """No face was found where one is needed."""


class BackendError(IplapError):
    """An inference backend is missing or cannot run the requested configuration."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (libraries' messages run on for
    pages), or its type's name when it has none: what a one-line error quotes."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
