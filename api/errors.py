"""The one map from supervisor errors to HTTP statuses, and error replies (JSON, or msgpack when asked)."""

import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException

from api.codec import answer
from envproc.wire import encode
from supervisor.errors import (
    BadRequest,
    EnvBusy,
    EnvCrashed,
    EnvGone,
    EnvRaised,
    EnvTimeout,
    Forbidden,
    NotAvailable,
    NotSignedIn,
    QuotaExceeded,
    ServerBusy,
    StorageFull,
    SupervisorError,
    TooLarge,
)

log = logging.getLogger("gym_supervisor.api")

STATUS: dict[type[SupervisorError], int] = {
    BadRequest: 400,
    TooLarge: 413,
    NotSignedIn: 401,
    Forbidden: 403,
    QuotaExceeded: 429,
    EnvRaised: 500,
    EnvCrashed: 502,
    EnvTimeout: 504,
    EnvBusy: 504,
    EnvGone: 410,
    ServerBusy: 503,
    NotAvailable: 501,
    StorageFull: 507,
}


def status_of(exc: SupervisorError) -> int:
    return next((STATUS[c] for c in type(exc).__mro__ if c in STATUS), 500)


def error_body(message: str, binary: bool = False) -> bytes:
    return encode({"message": message}, binary)


def headers_of(exc: SupervisorError) -> dict[str, str]:
    """What a client is told besides the message: when to retry, or how to sign in."""
    if isinstance(exc, NotSignedIn):
        return {"WWW-Authenticate": 'Bearer realm="gym-supervisor"'}
    retry = getattr(exc, "retry_after", None)
    return {"Retry-After": str(retry)} if retry else {}


def supervisor_error(request: Request, exc: SupervisorError) -> Response:
    return answer(request, {"message": str(exc)}, status_of(exc), headers_of(exc))


def http_error(request: Request, exc: HTTPException) -> Response:
    message = exc.detail
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see the README for the v1 routes"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return answer(request, {"message": message}, exc.status_code, exc.headers)


def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal_error path=%r", request.url.path)
    return answer(request, {"message": f"internal server error ({type(exc).__name__}: {exc}); please report it"}, 500)


HANDLERS = {SupervisorError: supervisor_error, HTTPException: http_error, Exception: internal_error}
