"""What an env is, apart from where it runs: its state, moved only along MOVES, how it died,
its counters, times and owner. Plain data and pure moves: no process, pipe or event loop."""

import enum
import time

# Why an env died, in one word (the metrics' label): one of DEATHS.
DEATHS = ("crash", "timeout", "memory", "cpu", "node_lost", "admin_kill", "idle", "lifetime", "crash_loop")


class State(enum.Enum):
    STARTING = "starting"  # its process is being made, and the env in it
    READY = "ready"  # idle, waiting for a request
    BUSY = "busy"  # working on a request
    DEAD = "dead"  # its process is gone or doomed; `cause` says how (kept listed for that)
    CLOSED = "closed"  # closed for good: nothing is left of it


MOVES: dict[State, frozenset[State]] = {
    State.STARTING: frozenset({State.READY, State.DEAD}),
    State.READY: frozenset({State.BUSY, State.DEAD}),
    State.BUSY: frozenset({State.READY, State.DEAD}),
    State.DEAD: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


class BadMove(RuntimeError):
    """A move MOVES does not allow: a bug of the server's, never of a client's."""


class Lifecycle:
    """Owns one env's life: its state, the first cause of its death and its kind, when it was
    created, last active and died, its steps, episodes and restarts, its owner and lifetime."""

    def __init__(self, owner: str = "", lifetime: float = 0, restarts: int = 0, now: float | None = None) -> None:
        self.state = State.STARTING
        self.owner = owner  # the user whose env this is ("" on a server without users)
        self.lifetime = lifetime  # seconds it may live (0: for ever)
        self.restarts = restarts  # processes this instance had before this one
        self.created = time.time() if now is None else now
        self.last_active = self.created
        self.steps = 0
        self.episodes = 0
        self.cause: str | None = None  # set once: the first cause is the one told
        self.death: str | None = None  # its kind, one of DEATHS
        self.died: float | None = None
        self.made = False  # it was built (it may have died since)

    def _move(self, to: State) -> None:
        if to not in MOVES[self.state]:
            raise BadMove(f"an env cannot go from {self.state.value} to {to.value}")
        self.state = to

    def ready(self) -> None:
        """The env is built."""
        self._move(State.READY)
        self.made = True

    def sent(self) -> None:
        """A request went to the env (a request while it starts, its make, leaves it STARTING)."""
        if self.state is State.READY:
            self._move(State.BUSY)

    def settled(self) -> None:
        """The env answered (or will not)."""
        if self.state is State.BUSY:
            self._move(State.READY)

    def die(self, cause: str, kind: str, now: float | None = None) -> bool:
        """Dead, of `cause` (of kind `kind`, one of DEATHS), unless it died already: the first
        cause sticks. True if this was its death."""
        if self.cause is not None:
            return False
        assert kind in DEATHS, kind
        self._move(State.DEAD)
        self.cause, self.death = cause, kind
        self.died = time.time() if now is None else now
        return True

    def amend(self, more: str, kind: str | None = None) -> None:
        """Add what became of a dead env (a crash loop, a failed restart) to its cause."""
        self.cause = more if self.cause is None else f"{more} (last: {self.cause})"
        self.death = kind or self.death

    def closed(self) -> None:
        """Closed for good; closing it again (a close that races a restart's) changes nothing."""
        if self.state is not State.CLOSED:
            self._move(State.CLOSED)

    def active(self, now: float | None = None) -> None:
        self.last_active = time.time() if now is None else now

    def past_lifetime(self, now: float) -> bool:
        return bool(self.lifetime) and now - self.created > self.lifetime
