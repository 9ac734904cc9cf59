"""The ASGI app: Litestar with the v1 routes, the step fast path in front, the registry inside."""

from collections.abc import Callable
from functools import partial

from litestar import Litestar

from api.errors import HANDLERS
from api.fastpath import StepFastPath
from api.params import MAX_BODY
from api.routes import ROUTES
from api.settings import Settings
from supervisor.limits import Limits
from supervisor.registry import Registry


def limits_of(settings: Settings) -> Limits:
    """The registry's part of the settings: the fields both share by name, and the one that differs."""
    shared = {name: getattr(settings, name) for name in Limits.__struct_fields__ if hasattr(settings, name)}
    return Limits(**shared, allow_modules=settings.allow_module)


def build(settings: Settings, request_exit: Callable[[], None]) -> StepFastPath:
    """The app; its registry starts the env forkserver now (ConfigError if that fails)."""
    registry = Registry(limits_of(settings))
    app = Litestar(
        route_handlers=ROUTES,
        exception_handlers=HANDLERS,
        on_startup=[registry.start],
        on_shutdown=[partial(registry.shutdown, settings.shutdown_grace)],
        request_max_body_size=MAX_BODY,
        openapi_config=None,
        logging_config=None,
    )
    app.state.registry = registry
    app.state.settings = settings
    app.state.request_exit = request_exit
    return StepFastPath(app, registry, settings)
