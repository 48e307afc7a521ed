"""Typed domain errors of the service.  One middleware maps them to the error envelope."""

from __future__ import annotations


class ApiError(Exception):
    """An error the client is told about.  ``status`` picks the HTTP status in the middleware;
    ``message`` must be something a person can act on, with no path or internal detail."""

    status = 500
    # True when the connection cannot serve another request after this answer.
    closes_connection = False

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(
            message, headers={"WWW-Authenticate": 'Bearer realm="filesvc", error="invalid_token"'}
        )


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class RequestTimeout(ApiError):
    """The client sent its body too slowly.  The rest of that body will not be read, so the
    connection is closed after the answer (``Connection: close``)."""

    status = 408
    closes_connection = True


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class RangeNotSatisfiable(ApiError):
    status = 416


class InsufficientStorage(ApiError):
    """Free space is below the floor: new uploads are refused before anything is written."""

    status = 507


class TooManyRequests(ApiError):
    """One caller asks for more at once than its share: unlike 503, the limit is the caller's
    own, and other callers are still served.  Retry-After tells when to retry."""

    status = 429

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class ServiceUnavailable(ApiError):
    """The server sheds load: too many uploads at once.  Retry-After tells when to retry."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class DamagedContent(ApiError):
    """fsck found this file's stored bytes damaged and quarantined them."""

    status = 500


class ClientAborted(ApiError):
    """The request body ended early or the connection broke mid-upload.  Stores never see the
    transport's own exceptions: the body reader turns them all into this one."""

    status = 400
