"""The Ray backend: env processes on the nodes of a Ray cluster, each forked by its node's agent
(supervisor/agent.py, a Ray actor pinned to the node) under the same limits as on this machine.

Ray places the agents, finds nodes, and tells which are dead; the server talks to each agent
over TCP and to each env over a connection of its own (supervisor/node.py): a Ray actor call
per step would cost about ten times the step.
"""

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

import msgspec

from supervisor.agent import Agent
from supervisor.asked import AskedLimits
from supervisor.errors import ConfigError, ServerBusy
from supervisor.handle import EnvHandle
from supervisor.limits import Limits
from supervisor.local import CLOSE_TIMEOUT, asked_limits
from supervisor.node import Node
from supervisor.usage import Usage

log = logging.getLogger("gym_supervisor.cluster")

AGENT_START = 120.0  # seconds an agent has to start its forkserver (which imports Gymnasium)
SCAN_EVERY = 5.0  # seconds between two looks at Ray's list of nodes
RETRY_AFTER = 60.0  # seconds before a node whose agent failed to start is tried again
MEASURE_TIMEOUT = 5.0


class RayBackend:
    """Owns the server's Ray connection (and the Ray instance, when it started one), one agent
    and one Node per live node, and the choice of a node for each new env."""

    name = "ray"

    def __init__(self, limits: Limits, data_dir: str, address_space: bool) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--backend ray needs Ray, on this machine and every node: "
                              "pip install 'gym-supervisor[ray]'") from None
        self._ray = ray
        self.limits = limits
        self._address_space = address_space
        self._secret = secrets.token_urlsafe(32)
        self._cwd = os.getcwd()
        self._env_path = tuple(dict.fromkeys([self._cwd, *(os.path.abspath(p) for p in limits.env_path)]))
        # What each agent enforces: the server's limits, paths made absolute (a node has no working directory of ours).
        self._agent_limits = msgspec.structs.replace(limits, data_dir=data_dir, env_path=self._env_path[1:])
        self._nodes: dict[str, Node] = {}  # Ray node id -> its current agent's Node
        self._failed: dict[str, float] = {}  # node id -> when its agent last failed to start (or be reached)
        self._retired: set[Node] = set()  # lost nodes whose agents were ended
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scanning: asyncio.Task[None] | None = None
        try:
            if limits.ray_address:
                ray.init(address=limits.ray_address, logging_level=logging.WARNING, log_to_driver=True)
            else:
                ray.init(logging_level=logging.WARNING, log_to_driver=True, include_dashboard=False)
        except Exception as exc:
            where = limits.ray_address or "a new local instance"
            raise ConfigError(f"--backend ray: could not connect to Ray ({where}): {exc}") from None
        if not limits.env_no_network:
            log.warning("ray_env_network_open reason='env code can reach Ray on its node (a cluster that does not "
                        "require Ray's token lets it run code on every node as Ray's user)' "
                        "advice='give --env-no-network, with --env-user or --env-uid-range, for env code you do not trust'")
        self._agent = ray.remote(num_cpus=0, max_restarts=0)(Agent)
        new = self._start_agents()
        if not new:
            ray.shutdown()
            raise ConfigError("--backend ray: no node of the Ray cluster started an agent (see the log)")
        self._found = new

    @property
    def env_path(self) -> tuple[str, ...]:
        return self._env_path

    def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        for node in self._found:
            self._add(node)
        self._found = []
        self._scanning = asyncio.ensure_future(self._keep_scanning())

    async def room(self, timeout: float) -> None:
        """Each node's agent gives a uid back as the local backend does; nothing to wait for here."""

    def handle(
        self, instance_id: str, env_id: str, kwargs: dict[str, Any], seed: int | None, restarts: int,
        asked: AskedLimits, owner: str, memory_cap: int, on_death: Callable[[EnvHandle], bool],
    ) -> EnvHandle:
        """A handle on the least loaded node (live envs and launches per CPU) of those with the
        resources it asks free; the node completes its limits (user, cgroup) as it forks it."""
        live = [node for node in self._nodes.values() if node.lost is None]
        if not live:
            raise ServerBusy("no node of the Ray cluster has an agent running now; retry")
        want = asked.resources
        fit = [node for node in live if node.fits(want)]
        if not fit:
            free = "; ".join(f"{n.node} ({n.node_id[:8]}): {n.free(want)}" for n in live)
            raise ServerBusy(f"no node of the Ray cluster has {_words(want)} free now (free: {free}); retry when "
                             "an env closes, or ask for less")
        node = min(fit, key=lambda n: n.load)
        limits = self.limits
        handle = EnvHandle(
            node, instance_id, env_id, kwargs, seed, asked_limits(limits, asked, memory_cap, self._address_space),
            limits.max_lifetime, restarts=restarts, max_reply=limits.max_reply_mb * 2**20, on_death=on_death,
            on_exit=node.release, owner=owner,
        )
        handle.resources = want
        node.hold(handle, want)  # now: the next create must see it taken
        return handle

    async def start(self, handle: EnvHandle, timeout: float) -> None:
        try:
            await handle.start(timeout)  # a failed one's user and cgroup are its node's to free
        except BaseException:
            handle.place.release(handle)  # type: ignore[attr-defined]
            raise

    async def dispose(self, handle: EnvHandle, timeout: float = CLOSE_TIMEOUT, force: bool = False,
                      **how: Any) -> None:
        await handle.close(timeout, force=force, **how)

    def usage(self, handles: list[EnvHandle]) -> list[Usage | None]:
        """Each env's usage as its node's agent reads it (blocking: from the watcher's thread)."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._measure(handles), self._loop)
        try:
            return future.result(MEASURE_TIMEOUT * 2)
        except Exception:
            future.cancel()
            return [None] * len(handles)

    def sweep(self) -> None:
        assert self._loop is not None
        for node in list(self._nodes.values()):
            self._loop.call_soon_threadsafe(node.sweep)

    def nodes(self) -> list[dict[str, Any]]:
        return [node.info() for node in self._nodes.values()]

    async def close(self) -> None:
        """Once every env is closed: end the agents, and the Ray instance if the server started it."""
        if self._scanning is not None:
            self._scanning.cancel()
        nodes = list(self._nodes.values())
        for node in nodes:
            node.close()
        await asyncio.get_running_loop().run_in_executor(None, self._shutdown, nodes)

    # --- nodes ---

    def _add(self, node: Node) -> None:
        old = self._nodes.get(node.node_id)
        if old is not None:
            old.lose("its agent was replaced")
        self._nodes[node.node_id] = node
        node.connect()
        log.info("node_joined node=%s node_id=%s agent=%s:%d agent_pid=%d cpus=%g", node.node, node.node_id,
                 node.host, node.port, node.agent_pid, node.cpus)

    async def _keep_scanning(self) -> None:
        """Every few seconds: nodes Ray reports dead are lost; a live node without a live agent
        (new, or its agent ended) gets one."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SCAN_EVERY)
            try:
                for node_id in await loop.run_in_executor(None, self._dead):  # first: their envs' requests wait
                    self._nodes[node_id].lose("Ray reports the node dead")
                await loop.run_in_executor(None, self._retire)
                for node in await loop.run_in_executor(None, self._start_agents):
                    self._add(node)
            except Exception as exc:  # Ray itself unreachable: keep what we have, look again later
                log.warning("ray_scan_failed reason=%r", str(exc))

    def _dead(self) -> list[str]:
        """(blocking) Our live nodes that Ray reports dead."""
        alive = {n["NodeID"] for n in self._ray.nodes() if n.get("Alive")}
        return [node_id for node_id, node in self._nodes.items() if node_id not in alive and node.lost is None]

    def _retire(self) -> None:
        """(blocking) End the agents of lost nodes (one may live on, cut off), before a node gets a
        new one: two agents of one server must not hand out the same uids there."""
        for node_id, node in self._nodes.items():
            if node.lost is None or node in self._retired:
                continue
            self._retired.add(node)
            if not node.reached:  # as an agent that failed to start: tried again later
                self._failed[node_id] = time.monotonic()
            try:
                self._ray.kill(node.actor)
            except Exception:
                pass  # gone already

    def _start_agents(self) -> list[Node]:
        """(blocking) An agent started on each live node that lacks one; their Nodes."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        alive = {n["NodeID"]: n for n in self._ray.nodes() if n.get("Alive")}
        wanted = [
            n for node_id, n in alive.items()
            if (node_id not in self._nodes or self._nodes[node_id].lost is not None)
            and time.monotonic() - self._failed.get(node_id, -RETRY_AFTER) >= RETRY_AFTER
        ]
        actors = []
        for n in wanted:
            host = self.limits.ray_agent_host or n["NodeManagerAddress"]
            actor = self._agent.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
            ).remote(self._agent_limits, self._secret, self._address_space, self._cwd)
            actors.append((n, actor, actor.serve.remote(host)))
        new = []
        for n, actor, serving in actors:
            try:
                host, port, pid = self._ray.get(serving, timeout=AGENT_START)
            except Exception as exc:
                self._failed[n["NodeID"]] = time.monotonic()
                log.error("agent_not_started node=%s node_id=%s reason=%r", n["NodeManagerAddress"], n["NodeID"],
                          str(exc).splitlines()[-1] if str(exc) else type(exc).__name__)
                self._ray.kill(actor)
                continue
            new.append(Node(n["NodeID"], n["NodeManagerAddress"], host, port, self._secret, pid,
                            dict(n.get("Resources", {})), actor))
        return new

    async def _measure(self, handles: list[EnvHandle]) -> list[Usage | None]:
        by_node: dict[Node, list[int]] = {}
        for i, h in enumerate(handles):
            by_node.setdefault(h.place, []).append(i)  # type: ignore[arg-type]
        out: list[Usage | None] = [None] * len(handles)

        async def one(node: Node, at: list[int]) -> None:
            try:
                used = await asyncio.wait_for(node.measure([handles[i].pid for i in at]), MEASURE_TIMEOUT)
            except Exception:
                return
            for i, u in zip(at, used, strict=True):
                out[i] = u

        await asyncio.gather(*(one(node, at) for node, at in by_node.items()))
        return out

    def _shutdown(self, nodes: list[Node]) -> None:
        """(blocking) End every agent (its forkserver, and any env process left, die with it);
        leave the cluster, stopping Ray if the server started it."""
        # Each live agent kills what is left on its node and frees its cgroups; a dead one holds up none.
        closing = [node.actor.close.remote() for node in nodes if node not in self._retired]
        if closing:
            self._ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT)
        for node in nodes:
            try:
                self._ray.kill(node.actor)
            except Exception:
                pass
        self._ray.shutdown()


def _words(resources: dict[str, float]) -> str:
    return ", ".join(f"{name} {amount:g}" for name, amount in resources.items())
