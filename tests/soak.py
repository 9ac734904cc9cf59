"""The fault soak: clients in parallel create envs of every fault kind beside healthy CartPoles.

Shared by tests/test_soak.py (short) and scripts/soak (long). Every request's status must be the
one the README documents; healthy envs must never fail nor wait past their own timeout; after
it, the server's process tree, descriptors and memory must be back where they were.
"""

import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import psutil

FAULTY = "tests.faulty_envs"
# A short timeout only where running out of it is the outcome expected (504); everything else
# gets a long one, so that a loaded machine changes how long it takes, never what it answers.
SHORT, LONG = {"X-Request-Timeout": "1"}, {"X-Request-Timeout": "30"}

# kind -> (action for the step, status the step must get, its timeout); None: the create fails.
KINDS: dict[str, tuple[int, int, str] | None] = {
    "Segfaults": (0, 502, "30"),
    "Exits": (0, 502, "30"),
    "Raises": (0, 500, "30"),
    "Spins": (0, 504, "1"),
    "IgnoresTerm": (0, 504, "1"),
    "MemoryBomb": (0, 502, "30"),
    "ForkBomb": (0, 200, "30"),
    "Floods": (1, 200, "30"),
    "SpawnsHelpers": (0, 200, "30"),
    "HangsInInit": None,
}
FD_SLACK = 5  # descriptors the server may hold beyond its count before the soak (its clients' sockets closing)
SERVER_FLAGS = ("--env-memory-mb", "200", "--env-max-procs", "64", "--env-cpu-seconds", "30")


@dataclass
class Report:
    counts: Counter = field(default_factory=Counter)  # (kind, request, status)
    unexpected: list[str] = field(default_factory=list)
    healthy_latency: list[float] = field(default_factory=list)
    leftovers: list[int] = field(default_factory=list)
    fds: tuple[int, int] = (0, 0)
    rss_mb: tuple[float, float] = (0.0, 0.0)

    def expect(self, kind: str, request: str, got: int, want: int, body: str = "") -> None:
        self.counts[(kind, request, got)] += 1
        if got != want:
            self.unexpected.append(f"{kind} {request}: {got}, expected {want}: {body[:200]}")

    def table(self) -> str:
        rows = ["| env | request | status | count |", "|---|---|---|---|"]
        rows += [f"| {k} | {r} | {s} | {n} |" for (k, r, s), n in sorted(self.counts.items())]
        lat = sorted(self.healthy_latency)
        p50 = statistics.median(lat) * 1e3 if lat else 0.0
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e3 if lat else 0.0
        rows += [
            "",
            f"healthy steps: {len(lat)}, latency p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(lat, default=0) * 1e3:.1f} ms",
            f"unexpected statuses: {len(self.unexpected)}",
            f"leftover processes: {len(self.leftovers)}",
            f"server descriptors before/after: {self.fds[0]}/{self.fds[1]}",
            f"server RSS before/after: {self.rss_mb[0]:.1f}/{self.rss_mb[1]:.1f} MB",
        ]
        return "\n".join(rows)


def fault_client(url: str, kinds: list[str], deadline: float, report: Report, lock: threading.Lock) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        i = 0
        while time.monotonic() < deadline:
            kind = kinds[i % len(kinds)]
            i += 1
            plan = KINDS[kind]
            r = c.post("/v1/envs/", json={"env_id": f"{FAULTY}:{kind}-v0"}, headers=SHORT if plan is None else LONG)
            with lock:
                report.expect(kind, "create", r.status_code, 504 if plan is None else 200, r.text)
            if plan is None or r.status_code != 200:
                continue
            iid = r.json()["instance_id"]
            action, want, timeout = plan
            results = [("reset", c.post(f"/v1/envs/{iid}/reset/", headers=LONG), 200)]
            step = c.post(f"/v1/envs/{iid}/step/", json={"action": action}, headers={"X-Request-Timeout": timeout})
            results.append(("step", step, want))
            results.append(("close", c.post(f"/v1/envs/{iid}/close/"), 204))
            with lock:
                for name, resp, expected in results:
                    report.expect(kind, name, resp.status_code, expected, resp.text)


def healthy_client(url: str, deadline: float, report: Report, lock: threading.Lock, healthy_timeout: float) -> None:
    with httpx.Client(base_url=url, timeout=healthy_timeout + 5) as c:
        r = c.post("/v1/envs/", json={"env_id": "CartPole-v1"}, headers=LONG)
        with lock:
            report.expect("CartPole-v1", "create", r.status_code, 200, r.text)
        iid = r.json()["instance_id"]
        r = c.post(f"/v1/envs/{iid}/reset/", headers=LONG)
        with lock:
            report.expect("CartPole-v1", "reset", r.status_code, 200, r.text)
        headers = {"X-Request-Timeout": f"{healthy_timeout:g}"}
        lat = []
        while time.monotonic() < deadline:
            t = time.perf_counter()
            r = c.post(f"/v1/envs/{iid}/step/", json={"action": len(lat) % 2}, headers=headers)
            lat.append(time.perf_counter() - t)
            if r.status_code != 200:
                with lock:
                    report.expect("CartPole-v1", "step", r.status_code, 200, r.text)
                break
            if r.json()["done"]:
                c.post(f"/v1/envs/{iid}/reset/")
        c.post(f"/v1/envs/{iid}/close/")
        with lock:
            report.counts[("CartPole-v1", "step", 200)] += len(lat)
            report.healthy_latency.extend(lat)
            if max(lat, default=0) > healthy_timeout:
                report.unexpected.append(f"a healthy step took {max(lat):.2f} s")


def _recorded(target: Callable[..., None], report: Report, lock: threading.Lock) -> Callable[..., None]:
    """A client thread whose failure (an exception, a timeout) is reported, not lost with it."""

    def run(*args: object) -> None:
        try:
            target(*args)
        except Exception as exc:
            with lock:
                report.unexpected.append(f"{target.__name__} failed: {type(exc).__name__}: {exc}")

    return run


def _settled_leftovers(server: psutil.Process, before: set[int], wait: float = 10) -> list[int]:
    """Processes beyond `before` once the last kills are reaped (a killed env's helpers are
    reaped by the forkserver a moment after the request that killed it is answered)."""
    deadline = time.monotonic() + wait
    while (left := sorted({p.pid for p in server.children(recursive=True)} - before)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _settled_fds(server: psutil.Process, before: int, slack: int, wait: float = 10) -> int:
    """The server's descriptors once it has seen its clients go (bounded wait)."""
    deadline = time.monotonic() + wait
    while (fds := server.num_fds()) > before + slack and time.monotonic() < deadline:
        time.sleep(0.1)
    return fds


def run(url: str, server_pid: int, seconds: float, fault_clients: int, healthy_clients: int,
        healthy_timeout: float = 5.0) -> Report:
    report, lock = Report(), threading.Lock()
    server = psutil.Process(server_pid)
    with httpx.Client(base_url=url, timeout=30) as c:  # warm up, so that first-use costs are not counted
        iid = c.post("/v1/envs/", json={"env_id": "CartPole-v1"}).json()["instance_id"]
        c.post(f"/v1/envs/{iid}/close/")
    before = {p.pid for p in server.children(recursive=True)}
    fds0, rss0 = server.num_fds(), server.memory_info().rss
    deadline = time.monotonic() + seconds
    kinds = list(KINDS)
    faults, healthy = _recorded(fault_client, report, lock), _recorded(healthy_client, report, lock)
    threads = [
        threading.Thread(target=faults, args=(url, kinds[i::fault_clients] or kinds, deadline, report, lock))
        for i in range(fault_clients)
    ] + [threading.Thread(target=healthy, args=(url, deadline, report, lock, healthy_timeout))
         for _ in range(healthy_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
        if t.is_alive():
            report.unexpected.append("a client was still running 120 s after the soak's end")
    if healthy_clients and not report.healthy_latency:
        report.unexpected.append("no healthy step was made")
    report.leftovers = _settled_leftovers(server, before)
    report.fds = (fds0, _settled_fds(server, fds0, FD_SLACK))
    report.rss_mb = (rss0 / 2**20, server.memory_info().rss / 2**20)
    return report
