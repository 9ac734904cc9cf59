"""Every error the supervisor raises.

SupervisorError
 +-- BadRequest          the request itself is wrong (bad parameter, module not allowed, bad path)
 |    +-- UnknownInstance     no env has this instance id
 |    +-- EnvUsage            the env refused the request as the client's mistake (step before reset)
 |    +-- LookupFailed        gymnasium.make knows no such env id
 +-- TooLarge            the request is larger than the server takes
 +-- NotSignedIn         the request carries no token, or one no user has
 +-- Forbidden           the caller's role may not do this
 +-- QuotaExceeded       the caller runs as many envs as their quota allows
 +-- EnvRaised           the env's own code raised; the env is still alive and usable
 +-- EnvCrashed          the env process died while answering this request
 +-- EnvTimeout          the env did not answer in time and was killed
 +-- EnvBusy             the env worked on earlier requests for all of this one's time; not run
 +-- EnvGone             the env died earlier; only close is left
 +-- ServerBusy          the server cannot start another env now
 |    +-- ShuttingDown        the server is stopping: it runs no new request
 +-- NotAvailable        this server lacks what the request needs (an optional dependency)
 +-- StorageFull         the data dir holds more than its cap: no new monitor
 +-- ConfigError         a setting cannot be honoured; the server does not start
"""


from envproc.protocol import Raised


class SupervisorError(Exception):
    """Base of all errors; `str()` is the message for the person who reads it."""


class BadRequest(SupervisorError):
    """Raised when a request's parameters are missing or wrong."""


class UnknownInstance(BadRequest):
    """Raised when no env has the instance id (never created, or closed); `fate` says what
    became of it, where the server still remembers."""

    def __init__(self, instance_id: str, fate: str | None = None) -> None:
        super().__init__(f"Instance_id {instance_id} unknown" + (f": it {fate}; create a new one" if fate else ""))


class EnvUsage(BadRequest):
    """Raised when the env refuses a request as the client's mistake."""


class LookupFailed(BadRequest):
    """Raised when create names an env id that Gymnasium cannot make."""

    def __init__(self, env_id: str, detail: str) -> None:
        super().__init__(f"Attempted to look up malformed environment ID '{env_id}': {detail}")


class TooLarge(SupervisorError):
    """Raised when a request, or a part of it, is larger than the server's limit for it."""


class NotSignedIn(SupervisorError):
    """Raised when the server has users and the request names none of them."""


class Forbidden(SupervisorError):
    """Raised when the caller is known but their role does not allow the request."""


class QuotaExceeded(SupervisorError):
    """Raised when a create (or restart of a dead env) would take the caller past max_envs."""


class EnvRaised(SupervisorError):
    """Raised when the env's code raised an exception; the env process lives on (or, in a create,
    no env was made)."""

    def __init__(self, message: str, exc_type: str) -> None:
        self.exc_type = exc_type
        super().__init__(message)


class EnvCrashed(SupervisorError):
    """Raised when the env process died during the request."""


class EnvTimeout(SupervisorError):
    """Raised when the env did not answer in time and was killed for it."""


class EnvBusy(SupervisorError):
    """Raised when a request's timeout ran out while the env was still busy with earlier ones:
    the request was never sent, and the env lives on."""


class EnvGone(SupervisorError):
    """Raised for any request but close to an env that died earlier."""


class ServerBusy(SupervisorError):
    """Raised when create cannot start an env now: the server is full or shutting down."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDown(ServerBusy):
    """Raised for a request that arrives, or is still running, while the server stops."""

    def __init__(self, message: str = "The server is shutting down") -> None:
        super().__init__(message)


class NotAvailable(SupervisorError):
    """Raised when the request needs something this server was installed without."""


class StorageFull(SupervisorError):
    """Raised for a monitor start while the data dir holds more than its cap."""


class ConfigError(SupervisorError):
    """Raised at start when a setting names something that is not there."""


def refusal(reply: Raised, name: str, env_id: str) -> SupervisorError:
    """The error for a request that env `name` answered with a failure, by whose fault it was."""
    if reply.kind == "request":
        return BadRequest(reply.message)
    if reply.kind == "usage":
        advice = "; call reset first" if reply.exc_type == "ResetNeeded" else ""
        return EnvUsage(f"{name}: {reply.message}{advice}")
    if reply.kind == "unavailable":
        return NotAvailable(reply.message)
    if reply.kind == "lookup":
        return LookupFailed(env_id, reply.message)
    if reply.kind == "make":
        return EnvRaised(f"{name} could not be made: {reply.message}; no env was created", reply.exc_type)
    return EnvRaised(f"{name} raised {reply.exc_type}: {reply.message}", reply.exc_type)
