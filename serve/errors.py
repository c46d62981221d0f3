"""Errors the HTTP API answers with: a status and a one-line message, sent as JSON.

Which failures are the caller's and which are ours is decided once, by
:class:`iplap.errors.Failure` (the package's error layer): the caller's get a 4xx with their
message, ours a 500 whose details stay in the server's log.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from ..errors import IplapError, one_line

log = logging.getLogger(__name__)

#: The words of the statuses aiohttp raises itself.
_REASONS = {404: "not found", 405: "method not allowed", 413: "the request is too large"}


class ApiError(Exception):
    """A request the service refuses: ``status`` (4xx) and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = one_line(message)  # one line, whatever the cause wrote


def from_iplap(exc: IplapError) -> ApiError:
    """A user error of the pipeline (bad media, no face, a damaged avatar) as a 422, in the
    API's own words (the message, without advice worded for Python callers)."""
    return ApiError(422, exc.message)


def json_response(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, separators=(",", ":")))


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": one_line(message)}, status)


@web.middleware
async def errors_middleware(request: web.Request, handler):
    """Every failure as a status and one line of JSON; a bug's traceback goes to the log only."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message)
    except IplapError as exc:
        return error_response(422, from_iplap(exc).message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = _REASONS.get(exc.status, exc.reason)
        return error_response(exc.status, f"{reason}: {request.method} {request.path}" if exc.status in (404, 405)
                              else reason)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:  # noqa: BLE001 - a bug: logged in full, answered in one line
        log.exception("error in %s %s", request.method, request.path)
        return error_response(500, "internal error (see the server's log)")
