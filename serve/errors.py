"""Errors the HTTP API answers with: a status and a one-line message, sent as JSON."""

from __future__ import annotations

from ..errors import IplapError


class ApiError(Exception):
    """A request the service refuses: ``status`` (4xx) and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())  # one line, whatever the cause wrote


def from_iplap(exc: IplapError) -> ApiError:
    """A user error of the pipeline (bad media, no face, a damaged avatar) as a 422, in the
    API's own words (the message, without advice worded for Python callers)."""
    return ApiError(422, exc.message)
