"""An env's Lifecycle on its own: the moves between states, the first cause, the counters. No
process is started."""

import itertools

import pytest

from supervisor.lifecycle import DEATHS, MOVES, BadMove, Lifecycle, State

pytestmark = pytest.mark.timeout(10)

# Each state reached through the public moves, from a new env.
PATHS = {
    State.STARTING: [],
    State.READY: ["ready"],
    State.BUSY: ["ready", "sent"],
    State.DEAD: ["ready", "die"],
    State.CLOSED: ["ready", "die", "closed"],
}
MOVE_TO = {State.READY: "ready", State.DEAD: "die", State.CLOSED: "closed"}  # the move that leads there


def at(state: State) -> Lifecycle:
    life = Lifecycle("alice", lifetime=60, now=1000.0)
    for move in PATHS[state]:
        if move == "die":
            life.die("was killed by SIGSEGV", "crash", now=1001.0)
        else:
            getattr(life, move)()
    assert life.state is state
    return life


@pytest.mark.parametrize(("start", "to"), list(itertools.product(State, [State.READY, State.DEAD, State.CLOSED])))
def test_only_the_moves_in_the_table_are_made(start: State, to: State) -> None:
    life = at(start)
    move = MOVE_TO[to]
    if to in MOVES[start]:
        life.die("x", "crash") if move == "die" else getattr(life, move)()
        assert life.state is to
    elif start is to is State.CLOSED:
        life.closed()  # closing again changes nothing (see below)
        assert life.state is State.CLOSED
    elif move == "die" and life.cause is not None:
        assert life.die("again", "timeout") is False and life.state is start  # dead already: no move, no new cause
    else:
        with pytest.raises(BadMove, match=f"from {start.value} to {to.value}"):
            getattr(life, move)() if move != "die" else life.die("x", "crash")
        assert life.state is start


def test_busy_and_ready_follow_requests_only_once_the_env_is_made() -> None:
    life = at(State.STARTING)
    life.sent()  # its make: it is still starting
    life.settled()
    assert life.state is State.STARTING and not life.made
    life.ready()
    life.sent()
    assert life.state is State.BUSY
    life.settled()
    assert life.state is State.READY and life.made
    life.die("was killed after 5 s without a reply", "timeout")
    life.sent()
    life.settled()  # a request that waited on it is settled: it stays dead
    assert life.state is State.DEAD


def test_the_first_cause_sticks_and_amends_keep_it() -> None:
    life = at(State.BUSY)
    assert life.die("was killed by SIGSEGV", "crash", now=1002.5) is True
    assert life.die("was closed", "crash") is False
    assert (life.cause, life.death, life.died) == ("was killed by SIGSEGV", "crash", 1002.5)
    life.amend("crash loop: 3 restarts in 60 s", "crash_loop")
    assert life.cause == "crash loop: 3 restarts in 60 s (last: was killed by SIGSEGV)"
    assert life.death == "crash_loop" and life.made
    never = at(State.STARTING)
    never.die("exited with code 3", "crash")
    assert not never.made and never.state is State.DEAD


def test_closing_a_closed_env_again_changes_nothing() -> None:
    life = at(State.CLOSED)
    life.closed()  # a close that raced a restart's
    assert life.state is State.CLOSED and life.cause == "was killed by SIGSEGV"


def test_every_death_has_a_known_kind() -> None:
    with pytest.raises(AssertionError):
        at(State.READY).die("was eaten", "eaten")
    for kind in DEATHS:
        assert at(State.READY).die("x", kind)


def test_lifetime_and_activity_use_the_clock_given() -> None:
    life = at(State.READY)
    assert not life.past_lifetime(1059.0) and life.past_lifetime(1060.5)
    assert not Lifecycle(lifetime=0, now=0).past_lifetime(10**9)  # 0: for ever
    life.active(now=1010.0)
    assert (life.created, life.last_active, life.owner) == (1000.0, 1010.0, "alice")
