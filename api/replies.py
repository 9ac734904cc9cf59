"""The routes' JSON replies as the OpenAPI schema shows them (handlers send bytes the env or the
registry made; these types document them and are checked against them in the tests)."""

from typing import Any

import msgspec

from envproc.protocol import StepReply  # noqa: F401 (step's reply, encoded by the env process)


class Restart(msgspec.Struct):
    max: int
    within_s: float | None


class Created(msgspec.Struct):
    instance_id: str
    restart: Restart | None = None  # the restart policy, as the server bounded it


class EnvList(msgspec.Struct):
    all_envs: dict[str, str]  # instance id -> env id, of the caller's envs


class Limits(msgspec.Struct):
    memory_mb: int
    cpu_seconds: float


class EnvInfo(msgspec.Struct):
    instance_id: str
    owner: str
    env_id: str
    state: str  # starting, ready, busy, dead, closed
    pid: int | None  # on its node, with --backend ray
    node: str  # with --backend ray, the address of the node it runs on ("" on this machine)
    created: float
    last_active: float
    steps: int
    episodes: int
    waiting: int
    monitoring: bool
    cpu_seconds: float | None
    cpu_percent: float | None
    rss_bytes: int | None
    limits: Limits
    restarts: int
    cause: str | None
    output: list[str]


class ResetReply(msgspec.Struct):
    observation: Any
    info: dict[str, Any]


class SpaceReply(msgspec.Struct):
    info: dict[str, Any]  # the space's description: name, shape, low, high, n...


class SampleReply(msgspec.Struct):
    action: Any


class Member(msgspec.Struct):
    member: bool


class OldProcess(msgspec.Struct):
    pid: int | None
    state: str
    cause: str | None


class NewProcess(msgspec.Struct):
    pid: int | None


class Restarted(msgspec.Struct):
    instance_id: str
    old: OldProcess
    new: NewProcess


class Me(msgspec.Struct):
    name: str
    role: str  # user, viewer or admin


class Message(msgspec.Struct):
    message: str


class AdminRow(msgspec.Struct):
    instance_id: str
    owner: str
    env_id: str
    state: str
    pid: int | None
    node: str
    cpu_percent: float | None
    rss_bytes: int | None
    created: float
    last_active: float
    steps: int
    episodes: int
    waiting: int
    restarts: int
    cause: str | None
    died: float | None
    death: str | None  # the cause's kind: crash, timeout, memory, cpu, node_lost, admin_kill, idle, lifetime, crash_loop
    renders: bool  # made with render_mode rgb_array: its frame is at /v1/envs/{id}/render
    history: list[list[float]]  # [seconds ago, CPU percent, RSS bytes], oldest first


class AdminEnvs(msgspec.Struct):
    envs: list[AdminRow]


class UserKilled(msgspec.Struct):
    user: str
    killed: list[str]


class ServerUsage(msgspec.Struct):
    pid: int
    cpu_seconds: float
    rss_bytes: int
    uptime_s: float
    threads: int  # of the API process: the watcher's, the forkserver reader's, uvicorn's
    tasks: int  # asyncio tasks: one per request or session in flight, none per idle env


class NodeInfo(msgspec.Struct):
    node: str  # its address
    node_id: str  # Ray's
    agent: str  # where its agent listens
    agent_pid: int  # on the node
    cpus: float
    envs: int  # env processes alive there
    lost: str | None  # why the server no longer uses it
    resources: dict[str, float]  # Ray's totals for it (CPU, GPU, custom ones)
    held: dict[str, float]  # what its envs' creates asked of those


class Stats(msgspec.Struct):
    backend: str  # local or ray
    nodes: list[NodeInfo]  # with --backend ray: each node with an agent (none for local)
    envs: dict[str, int]  # by state
    envs_by_user: dict[str, dict[str, int]]
    live_envs: int
    pool: dict[str, int]  # ready envs of each --prespawn id
    deaths: dict[str, int]  # by kind
    server: ServerUsage
    requests_by_status: dict[str, int]


class Health(msgspec.Struct):
    status: str
