"""Who calls: a request's bearer token resolved to a Caller, by Litestar's authentication
middleware and by the step fast path alike (the same functions), and the guards for roles."""

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.middleware.base import DefineMiddleware
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme
from litestar.security.base import AbstractSecurityConfig

from api.users import Users
from supervisor.errors import Forbidden, NotSignedIn
from supervisor.view import OPEN, Caller

PUBLIC = "public"  # a handler's opt key: no token needed (healthz, the admin page that asks for one)


class Callers:
    """Owns the users the server knows now (None: open, one user), swapped whole on a reload."""

    def __init__(self, users: Users | None) -> None:
        self.users = users

    def resolve(self, authorization: str | bytes | None) -> Caller | None:
        """The caller an Authorization header names (OPEN on a server without users), or None."""
        if self.users is None:
            return OPEN
        if not authorization:
            return None
        if isinstance(authorization, bytes):
            authorization = authorization.decode("latin-1")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.users.get(token.strip())


def signed_in(caller: Caller | None) -> Caller:
    """The caller, or NotSignedIn (401) for a request that names no user."""
    if caller is None:
        raise NotSignedIn("this server needs a token: send the header 'Authorization: Bearer <token>' with a "
                          "token its admin made for you (gym-supervisor token NAME)")
    return caller


# Guards are coroutines: Litestar runs a plain function guard in a worker thread, a thread hop
# per guard per request (seen in a profile of the batch route).
async def need_sign_in(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """The guard of every route but the public ones."""
    if not handler.opt.get(PUBLIC):
        signed_in(connection.user)


async def may_view(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Admin views: viewers and admins."""
    caller = signed_in(connection.user)
    if caller.role not in ("viewer", "admin"):
        raise Forbidden(f"user {caller.name} has the role {caller.role!r}; this view needs 'viewer' or 'admin'")


async def is_admin(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """What changes others' envs or the server: admins only."""
    caller = signed_in(connection.user)
    if caller.role != "admin":
        raise Forbidden(f"user {caller.name} has the role {caller.role!r}; only an admin may do this")


class CallerMiddleware(AbstractAuthenticationMiddleware):
    """Puts the caller (or None) on the connection; it refuses nothing itself, so that the
    guards' refusals pass through the error table and the request metrics as any error does."""

    def __init__(self, app: Any, callers: Callers, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.callers = callers

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        return AuthenticationResult(user=self.callers.resolve(connection.headers.get("authorization")), auth=None)


class BearerAuth(AbstractSecurityConfig[Caller, None]):
    """The bearer scheme, as the app's middleware and in the OpenAPI schema."""

    def __init__(self, callers: Callers) -> None:  # what on_app_init reads, and no more
        self.callers = callers
        self.guards = [need_sign_in]
        self.dependencies = None
        self.route_handlers = None
        self.type_encoders = None

    @property
    def openapi_components(self) -> Components:
        return Components(security_schemes={"BearerToken": SecurityScheme(
            type="http", scheme="bearer", description="a token from the server's users file; none on an open server",
        )})

    @property
    def security_requirement(self) -> SecurityRequirement:
        return {"BearerToken": []}

    @property
    def middleware(self) -> DefineMiddleware:
        return DefineMiddleware(CallerMiddleware, callers=self.callers, exclude_http_methods=[])
