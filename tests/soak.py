"""The fault soak: clients in parallel create envs of every fault kind beside healthy CartPoles.

Shared by tests/test_soak.py (short) and scripts/soak (long). Every request's status must be the
one the README documents; healthy envs must never fail nor wait past their own timeout; after
it, the server's process tree, descriptors and memory must be back where they were.
"""

import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import psutil

FAULTY = "tests.faulty_envs"
TIMEOUT = {"X-Request-Timeout": "1"}
HEALTHY_TIMEOUT = 5.0

# kind -> (action for the step, status the step must get, its timeout); None: the create fails.
# The memory bomb gets time to reach its limit even on a loaded machine (else it is a 504).
KINDS: dict[str, tuple[int, int, str] | None] = {
    "Segfaults": (0, 502, "1"),
    "Exits": (0, 502, "1"),
    "Raises": (0, 500, "1"),
    "Spins": (0, 504, "1"),
    "IgnoresTerm": (0, 504, "1"),
    "MemoryBomb": (0, 502, "20"),
    "ForkBomb": (0, 200, "10"),
    "Floods": (1, 200, "10"),
    "SpawnsHelpers": (0, 200, "10"),
    "HangsInInit": None,
}
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
            r = c.post("/v1/envs/", json={"env_id": f"{FAULTY}:{kind}-v0"}, headers=TIMEOUT)
            with lock:
                report.expect(kind, "create", r.status_code, 504 if plan is None else 200, r.text)
            if plan is None or r.status_code != 200:
                continue
            iid = r.json()["instance_id"]
            action, want, timeout = plan
            results = [("reset", c.post(f"/v1/envs/{iid}/reset/", headers=TIMEOUT), 200)]
            step = c.post(f"/v1/envs/{iid}/step/", json={"action": action}, headers={"X-Request-Timeout": timeout})
            results.append(("step", step, want))
            results.append(("close", c.post(f"/v1/envs/{iid}/close/"), 204))
            with lock:
                for name, resp, expected in results:
                    report.expect(kind, name, resp.status_code, expected, resp.text)


def healthy_client(url: str, deadline: float, report: Report, lock: threading.Lock) -> None:
    with httpx.Client(base_url=url, timeout=HEALTHY_TIMEOUT + 5) as c:
        r = c.post("/v1/envs/", json={"env_id": "CartPole-v1"})
        iid = r.json()["instance_id"]
        c.post(f"/v1/envs/{iid}/reset/")
        headers = {"X-Request-Timeout": str(HEALTHY_TIMEOUT)}
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
            if max(lat, default=0) > HEALTHY_TIMEOUT:
                report.unexpected.append(f"a healthy step took {max(lat):.2f} s")


def run(url: str, server_pid: int, seconds: float, fault_clients: int, healthy_clients: int) -> Report:
    report, lock = Report(), threading.Lock()
    server = psutil.Process(server_pid)
    with httpx.Client(base_url=url, timeout=30) as c:  # warm up, so that first-use costs are not counted
        iid = c.post("/v1/envs/", json={"env_id": "CartPole-v1"}).json()["instance_id"]
        c.post(f"/v1/envs/{iid}/close/")
    before = {p.pid for p in server.children(recursive=True)}
    fds0, rss0 = server.num_fds(), server.memory_info().rss
    deadline = time.monotonic() + seconds
    kinds = list(KINDS)
    threads = [
        threading.Thread(target=fault_client, args=(url, kinds[i::fault_clients] or kinds, deadline, report, lock))
        for i in range(fault_clients)
    ] + [threading.Thread(target=healthy_client, args=(url, deadline, report, lock)) for _ in range(healthy_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    after = {p.pid for p in server.children(recursive=True)}
    report.leftovers = sorted(after - before)
    report.fds = (fds0, server.num_fds())
    report.rss_mb = (rss0 / 2**20, server.memory_info().rss / 2**20)
    return report
