"""The one message protocol between the API process and an env process."""

from typing import Any

import msgspec

# The env process exits with this code when it runs out of memory: its state cannot be trusted.
EXIT_OUT_OF_MEMORY = 86


class EnvLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What the env process may use; 0 or None: no limit."""

    memory_mb: int = 0  # the process tree's memory, as the server watches it
    address_space_mb: int = 0  # RLIMIT_AS beyond what the process starts with (set only when asked for)
    cpu_seconds: float = 0  # CPU time of the env process itself
    max_files: int = 0  # open file descriptors
    cgroup: str | None = None  # a pids cgroup directory the process joins before anything else
    no_network: bool = False  # a network namespace of its own, with only loopback
    uid: int | None = None  # the user env code runs as (the server must be root to switch)
    gid: int | None = None
    own_uid: bool = False  # the uid is this env's alone (--env-uid-range)


class Request(msgspec.Struct, frozen=True, kw_only=True, tag_field="op", tag=str.lower):
    """Every request carries `seq`; its reply carries the same one back. `binary`: the reply's
    body in msgpack, arrays as raw bytes (envproc/wire.py), instead of JSON."""

    seq: int
    binary: bool = False


class Make(Request):
    env_id: str
    kwargs: dict[str, Any] = {}
    seed: int | None = None
    limits: EnvLimits = EnvLimits()


class Reset(Request):
    seed: int | None = None
    options: dict[str, Any] | None = None


class Step(Request):
    body: bytes  # the client's raw body: parsed in the child, never in the API process
    msgpack_body: bool = False  # the body is msgpack, not JSON
    autoreset: bool = False  # after an episode's end, this step resets instead (Gymnasium's next-step mode)


class SpaceInfo(Request):
    space: str  # "action" or "observation"


class Sample(Request):
    pass


class ActionContains(Request):
    x: str  # as it came in the URL


class ObservationContains(Request):
    props: dict[str, Any]


class MonitorStart(Request):
    directory: str  # absolute, already confined to the data dir by the API process
    force: bool = False
    resume: bool = False
    video_every: int = 0  # record every n-th episode; 0 records none


class MonitorClose(Request):
    pass


class Seed(Request):
    seed: int | None  # as create's: the first reset's seed, and the action space's now (a pooled env's create)


class Render(Request):
    pass  # the reply's body is a PNG, not JSON


class Close(Request):
    pass


AnyRequest = (Make | Reset | Step | SpaceInfo | Sample | ActionContains | ObservationContains | MonitorStart
              | MonitorClose | Seed | Render | Close)


class StepReply(msgspec.Struct):
    """A step's reply as its client gets it: JSON the env process encodes, which the server
    passes on unread (and the OpenAPI schema documents)."""

    observation: Any
    reward: float
    done: bool
    info: dict[str, Any]
    terminated: bool
    truncated: bool


class Reply(msgspec.Struct, frozen=True, tag_field="op", tag=str.lower):
    seq: int


class Done(Reply):
    body: bytes  # the HTTP reply body, encoded in the child as the request asked; passed through untouched


class Raised(Reply):
    """The request failed in the child; `kind` says whose fault it is."""

    # "env": the env raised; "make": making the env raised (its module's import or gymnasium.make);
    # "usage": the client misused the env; "request": the request itself is bad; "lookup": make
    # found no such env id; "unavailable": this server lacks what it needs
    kind: str
    exc_type: str
    message: str


AnyReply = Done | Raised


# --- between the server and the env forkserver (envproc/forkserver.py) ---


class ForkserverConfig(msgspec.Struct, frozen=True):
    """What the forkserver starts with: its first command-line argument, as JSON."""

    env_path: tuple[str, ...]  # directories put first on sys.path: where env modules are found
    preload: tuple[str, ...]  # modules imported once, before any env process is forked
    parent: int = 0  # the server's pid: the forkserver ends with it
    stdlib: bool = False  # preload the standard library env code is likely to import (see forkserver)


class Control(msgspec.Struct, frozen=True, tag_field="op", tag=str.lower):
    pass


class Ready(Control):
    """The forkserver has imported what it was asked to (or says why it could not)."""

    failed: dict[str, str]  # module -> why its import failed


class Spawn(Control):
    """Fork one env process; its pipe end and its output end travel beside this message."""


class Spawned(Control):
    pid: int


class SpawnFailed(Control):
    """The fork failed (no pids or memory left): the create fails, the forkserver serves on."""

    reason: str


class Reap(Control):
    """Kill every process of this uid (an env's own, from a range): before it serves another env."""

    uid: int


class Reaped(Control):
    uid: int


class Exited(Control):
    """An env process ended: its exit code, or -N if signal N ended it (multiprocessing's way)."""

    pid: int
    code: int


AnyControl = Ready | Spawn | Spawned | SpawnFailed | Reap | Reaped | Exited

encode = msgspec.msgpack.Encoder().encode
decode_request = msgspec.msgpack.Decoder(AnyRequest).decode
decode_reply = msgspec.msgpack.Decoder(AnyReply).decode
decode_control = msgspec.msgpack.Decoder(AnyControl).decode
