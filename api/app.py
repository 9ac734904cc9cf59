"""The ASGI app: Litestar with the v1 and admin routes behind one request pipeline (the caller
resolved, guards for roles, errors through one table, metrics), the step fast path in front
going through the same, and the registry inside."""

import asyncio
import logging
import signal
from collections.abc import Callable
from functools import partial

from litestar import Litestar

from api.admin import ROUTES as ADMIN_ROUTES
from api.batch import batch_step
from api.auth import BearerAuth, Callers
from api.errors import HANDLERS
from api import openapi
from api.fastpath import StepFastPath
from api.metrics import CONFIG, Metrics, watch
from api.params import MAX_BODY
from api.routes import ROUTES
from api.settings import Settings, package_version
from api.users import BadUsersFile, Users, read_users
from supervisor.limits import Limits
from supervisor.registry import Registry

log = logging.getLogger("gym_supervisor.server")


def limits_of(settings: Settings) -> Limits:
    """The registry's part of the settings: the fields both share by name, and the one that differs."""
    shared = {name: getattr(settings, name) for name in Limits.__struct_fields__ if hasattr(settings, name)}
    return Limits(**shared, allow_modules=settings.allow_module)


def build(settings: Settings, request_exit: Callable[[], None], users: Users | None = None) -> StepFastPath:
    """The app; its registry starts the env forkserver now (ConfigError if that fails)."""
    registry = Registry(limits_of(settings))
    callers = Callers(users)
    reloads: set[asyncio.Future[list[str]]] = set()  # users removed by a reload, their envs being closed

    def reload_users() -> None:
        """SIGHUP: read the users file again; a bad one is refused and the old users stay."""
        if settings.users is None:
            log.info("users_not_reloaded reason='the server runs without --users'")
            return
        try:
            new = read_users(settings.users)
        except BadUsersFile as exc:
            log.warning("users_not_reloaded file=%r reason=%r", settings.users, str(exc))
            return
        removed = sorted((callers.users.names if callers.users else set()) - new.names)
        callers.users = new
        log.info("users_reloaded file=%r users=%d removed=%r", settings.users, len(new.names), removed)
        for name in removed:
            task = asyncio.ensure_future(registry.close_owner(name, f"was closed: its user {name} was removed"))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

    def on_startup() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload_users)

    watch(registry)
    app = Litestar(
        route_handlers=[*ROUTES, batch_step, *ADMIN_ROUTES, Metrics, openapi.static_files()],
        exception_handlers=HANDLERS,
        on_app_init=[BearerAuth(callers).on_app_init],
        middleware=[CONFIG.middleware],
        on_startup=[registry.start, on_startup],
        on_shutdown=[partial(registry.shutdown, settings.shutdown_grace)],
        request_max_body_size=MAX_BODY,
        openapi_config=openapi.config(package_version()),
        logging_config=None,
    )
    app.state.registry = registry
    app.state.settings = settings
    app.state.request_exit = request_exit
    return StepFastPath(app, registry, settings, callers)
