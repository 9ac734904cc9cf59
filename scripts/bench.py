"""scripts/bench: the server beside its floors, measured interleaved in rounds on one machine.

The server is started as users start it: `scripts/serve` (the installed `gym-supervisor`
command). Floors: env.step in-process; one pipe round trip to a child, awaited on the event
loop; a bare Litestar route on uvicorn with the server's own settings (the HTTP floor). The
client is raw HTTP/1.1 on keep-alive sockets; its own cost per request is measured and printed too.
"""

import argparse
import asyncio
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from collections.abc import Callable

import gymnasium as gym
import msgspec
import numpy as np
import psutil
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from envproc.wire import arrays, encode_msgpack  # noqa: E402
from supervisor.pipe import frame  # noqa: E402

STEP_BODY = b'{"action":1}'
IMAGES = ("84x84x3", "210x160x3")  # an Atari frame downsampled as DQN's, and whole
POOLED = "Acrobot-v1"  # the warm pool's env id (CartPole's creates stay cold)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, path: str, body: bytes = b"", token: str | None = None, msgpack: bool = False) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    kind = "Content-Type: application/msgpack\r\nAccept: application/msgpack" if msgpack else "Content-Type: application/json"
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{kind}\r\n{auth}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def json_observation(body: bytes) -> np.ndarray:
    return np.asarray(msgspec.json.decode(body)["observation"], np.uint8)


def msgpack_observation(body: bytes) -> np.ndarray:
    return arrays(msgspec.msgpack.decode(body))["observation"]


def parse(buf: bytearray) -> tuple[int, bytes] | None:
    """One whole response at the start of buf, removed from it; None if not all there yet."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end])
    i = head.lower().find(b"content-length:")
    n = int(head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
    if len(buf) < end + 4 + n:
        return None
    body = bytes(buf[end + 4 : end + 4 + n])
    del buf[: end + 4 + n]
    return int(head[9:12]), body


class Raw:
    """One keep-alive connection, one request at a time."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.token = token
        self.connect()

    def connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def call(self, req: bytes) -> tuple[int, bytes]:
        self.sock.sendall(req)
        while (got := parse(self.buf)) is None:
            data = self.sock.recv(1 << 20)
            if not data:  # uvicorn closed the idle keep-alive connection: ask again on a new one
                self.sock.close()
                self.connect()
                return self.call(req)
            self.buf += data
        return got

    def json(self, method: str, path: str, body: object = None) -> object:
        status, out = self.call(http(method, path, b"" if body is None else msgspec.json.encode(body), self.token))
        assert status in (200, 204), (status, out)
        return msgspec.json.decode(out) if out else None


def latencies(port: int, req: bytes, n: int, decode: Callable[[bytes], object] | None = None) -> list[float]:
    """Each request's round trip; with `decode`, its reply decoded too (the client's share)."""
    c = Raw(port)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        status, body = c.call(req)
        if decode is not None:
            decode(body)
        out.append(time.perf_counter() - t)
        assert status == 200, status
    c.sock.close()
    return out


class _Proto(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None

    def connection_made(self, t: asyncio.BaseTransport) -> None:
        self.t = t

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter and not self.waiter.done() and (got := parse(self.buf)) is not None:
            self.waiter.set_result(got)


async def _one_client(port: int, req: bytes, stop: float) -> int:
    loop = asyncio.get_running_loop()
    t, p = await loop.create_connection(_Proto, "127.0.0.1", port)
    t.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    n = 0
    while time.perf_counter() < stop:
        p.waiter = loop.create_future()
        t.write(req)
        status, _ = await p.waiter
        assert status == 200
        n += 1
    t.close()
    return n


def throughput(port: int, reqs: list[bytes], seconds: float) -> float:
    async def run() -> int:
        stop = time.perf_counter() + seconds
        return sum(await asyncio.gather(*(_one_client(port, r, stop) for r in reqs)))

    return uvloop.run(run()) / seconds


MASK = b"\x5a\xa5\x3c\xc3"  # a client's frames are masked; any key does for a bench


def ws_frame(payload: bytes) -> bytes:
    """One masked text frame of `payload` (under 64 KiB)."""
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    return head + MASK + bytes(c ^ MASK[i % 4] for i, c in enumerate(payload))


def ws_frames(buf: bytearray) -> int:
    """How many whole (unmasked, server) frames start buf; they are removed from it."""
    count, at = 0, 0
    while len(buf) - at >= 2:
        n, head = buf[at + 1] & 0x7F, 2
        if n == 126:
            if len(buf) - at < 4:
                break
            n, head = int.from_bytes(buf[at + 2 : at + 4], "big"), 4
        elif n == 127:
            if len(buf) - at < 10:
                break
            n, head = int.from_bytes(buf[at + 2 : at + 10], "big"), 10
        if len(buf) - at < head + n:
            break
        at += head + n
        count += 1
    del buf[:at]
    return count


def ws_throughput(port: int, instance_id: str, seconds: float, window: int = 32) -> float:
    """Steps/s of one WebSocket session kept `window` requests ahead of its answers, on a raw
    socket (as the HTTP figures' client is: its own cost stays small)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(f"GET /v1/envs/{instance_id}/session HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(4096)
    assert buf.startswith(b"HTTP/1.1 101"), bytes(buf)
    del buf[: buf.index(b"\r\n\r\n") + 4]
    frame = ws_frame(b'{"op":"step","action":1}')
    sock.sendall(frame * window)
    done, start = 0, time.perf_counter()
    stop = start + seconds
    while time.perf_counter() < stop:
        buf += sock.recv(1 << 20)
        got = ws_frames(buf)
        done += got
        if got:
            sock.sendall(frame * got)
    took = time.perf_counter() - start
    sock.close()
    return done / took


def cpu_of(proc: psutil.Process) -> float:
    """Seconds of CPU the process used so far (all its threads)."""
    t = proc.cpu_times()
    return t.user + t.system


def client_cost(n: int = 20000) -> float:
    """What the latency client spends per request on its own: build, parse (no network)."""
    canned = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 110\r\n\r\n" + b"x" * 110
    t = time.perf_counter()
    for _ in range(n):
        http("POST", "/v1/envs/abcdefgh/step", STEP_BODY)
        parse(bytearray(canned))
    return (time.perf_counter() - t) / n


def env_step_floor(n: int) -> list[float]:
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    out = []
    for i in range(n):
        t = time.perf_counter()
        _, _, term, trunc, _ = env.step(i % 2)
        out.append(time.perf_counter() - t)
        if term or trunc:
            env.reset()
    return out


def _echo(conn: "multiprocessing.connection.Connection") -> None:
    while True:
        try:
            conn.send_bytes(conn.recv_bytes())
        except EOFError:
            return


class _FrameWaiter(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= 4 and len(self.buf) >= 4 + int.from_bytes(self.buf[:4], "big"):
            self.buf.clear()
            self.waiter.set_result(None)


def pipe_floor(n: int) -> list[float]:
    ctx = multiprocessing.get_context("forkserver")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_echo, args=(child,), daemon=True)
    proc.start()
    child.close()

    async def run() -> list[float]:
        loop = asyncio.get_running_loop()
        sock = socket.socket(fileno=os.dup(parent.fileno()))
        t, p = await loop.create_unix_connection(_FrameWaiter, sock=sock)
        msg = frame(b"x" * 100)
        out = []
        for _ in range(n):
            s = time.perf_counter()
            p.waiter = loop.create_future()
            t.write(msg)
            await p.waiter
            out.append(time.perf_counter() - s)
        t.close()
        return out

    try:
        return uvloop.run(run())
    finally:
        parent.close()
        proc.join(5)


def start(cmd: list[str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{cmd[:3]} did not start: {log.read_text()}")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def env_processes(server: subprocess.Popen) -> list[psutil.Process]:
    """The env processes: the children of the server's env forkserver (they share its cmdline)."""
    out = []
    for p in psutil.Process(server.pid).children():
        try:
            if "forkserver" in " ".join(p.cmdline()):
                out.extend(p.children())
        except psutil.NoSuchProcess:
            pass
    return out


BARE = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
import envproc.worker, gymnasium as gym, gymnasium.envs.classic_control, gymnasium.envs.toy_text  # as the forkserver
made, ready = os.pipe()
pids = []
for _ in range(5):
    pid = os.fork()
    if pid == 0:
        env = gym.make("CartPole-v1"); env.reset(seed=0); env.step(0)
        os.write(ready, b"x")
        signal.pause()
    pids.append(pid)
for _ in pids:
    os.read(made, 1)
print(" ".join(map(str, pids)), flush=True)
time.sleep(60)
"""


def bare_child_uss() -> float:
    """The floor of an env's memory: the USS of a child forked from a Python that imported what
    the env forkserver imports, once it has made and stepped CartPole (no guardian, no pipe)."""
    proc = subprocess.Popen([sys.executable, "-c", BARE, str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]  # type: ignore[union-attr]  (once all made theirs)
        return statistics.mean(psutil.Process(p).memory_full_info().uss for p in pids) / 2**20
    finally:
        for p in psutil.Process(proc.pid).children():
            p.kill()
        proc.kill()
        proc.wait(10)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that `finally` stops the servers
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="per throughput measurement")
    ap.add_argument("--steps", type=int, default=2000, help="per latency measurement")
    ap.add_argument("--envs", type=int, default=100, help="idle envs for the memory figure")
    ap.add_argument("--scale", default="100,500,1000", help="levels of idle envs to measure among (comma-separated)")
    ap.add_argument("--backend", choices=["local", "ray"], default="local",
                    help="ray: the Ray backend beside the local one (scripts/bench_ray.py), and nothing else")
    ap.add_argument("--ray-address", help="with --backend ray: join this cluster (default: the server starts Ray here)")
    ap.add_argument("--ray-agent-host", default="127.0.0.1",
                    help="with --backend ray: where the agents listen (127.0.0.1: a cluster on this machine)")
    args = ap.parse_args()
    if args.backend == "ray":
        import bench_ray

        bench_ray.main(args)
        return
    levels = [int(n) for n in args.scale.split(",") if n]

    tmp = Path(tempfile.mkdtemp(prefix="gym-supervisor-bench-"))
    sport, fport, uport = free_port(), free_port(), free_port()
    server = start([str(ROOT / "scripts" / "serve"), "--port", str(sport), "--data-dir", str(tmp / "data"),
                    "--allow-module", "tests.faulty_envs", "--log-level", "warning", "--prespawn", f"{POOLED}=4",
                    "--max-envs", str(max([*levels, args.envs]) + 64)],
                   sport, tmp / "server.log")
    floor = start([sys.executable, "scripts/bench_floor.py", str(fport)], fport, tmp / "floor.log")
    # the same server with users: 50 of them in its file, one of whom steps
    tokens = [subprocess.run([str(ROOT / ".venv" / "bin" / "gym-supervisor"), "token", f"user{i}"], check=True,
                             capture_output=True, text=True).stdout for i in range(50)]
    (tmp / "users.toml").write_text("".join(t.split("\n", 2)[2] for t in tokens))
    token = tokens[17].split("\n", 1)[0]
    users = start([str(ROOT / "scripts" / "serve"), "--port", str(uport), "--data-dir", str(tmp / "data"),
                   "--users", str(tmp / "users.toml"), "--log-level", "warning"], uport, tmp / "users.log")
    try:
        c = Raw(sport)
        u = Raw(uport, token)
        user_cart = u.json("POST", "/v1/envs/", {"env_id": "CartPole-v1"})["instance_id"]
        u.json("POST", f"/v1/envs/{user_cart}/reset/")
        user_step = http("POST", f"/v1/envs/{user_cart}/step", STEP_BODY, token)

        def env(env_id: str, **kwargs: object) -> str:
            iid = c.json("POST", "/v1/envs/", {"env_id": env_id, "kwargs": kwargs})["instance_id"]
            c.json("POST", f"/v1/envs/{iid}/reset/")
            return iid

        # Measured steps never reset: CartPole keeps stepping past an episode's end (Gymnasium warns
        # once per process), at the same cost, so a reset's cost never mixes into a step's figure.
        cart = [env("CartPole-v1") for _ in range(16)]
        images = {shape: env("tests.faulty_envs:Image-v0", shape=[int(n) for n in shape.split("x")])
                  for shape in IMAGES}
        step = {i: http("POST", f"/v1/envs/{i}/step", STEP_BODY) for i in [*cart, *images.values()]}
        packed_step = {i: http("POST", f"/v1/envs/{i}/step", encode_msgpack({"action": 1}), msgpack=True)
                       for i in images.values()}
        info_req = http("GET", f"/v1/envs/{cart[1]}/")
        batch_req = http("POST", "/v1/batch/step", msgspec.json.encode(
            {"steps": [{"instance_id": i, "action": 1} for i in cart], "autoreset": True}))
        floor_req = http("POST", "/v1/envs/abcdefgh/step", STEP_BODY)

        res: dict[str, list[float]] = {}

        def add(key: str, xs: list[float] | float) -> None:
            res.setdefault(key, []).extend(xs if isinstance(xs, list) else [xs])

        me, floor_proc = psutil.Process(server.pid), psutil.Process(floor.pid)
        for r in range(args.rounds):
            add("env_step", env_step_floor(args.steps * 5))
            add("pipe", pipe_floor(args.steps))
            before = cpu_of(floor_proc)
            add("http_floor", latencies(fport, floor_req, args.steps))
            add("cpu_floor", (cpu_of(floor_proc) - before) / args.steps)
            before = cpu_of(me)
            add("step_cart", latencies(sport, step[cart[0]], args.steps))
            add("cpu_step", (cpu_of(me) - before) / args.steps)
            add("step_cart_users", latencies(uport, user_step, args.steps))
            # two clients poll env info as fast as they can meanwhile: the info must not cost the steps
            polling = threading.Thread(target=throughput, args=(sport, [info_req, info_req], 2.0))
            polling.start()
            add("step_cart_polled", latencies(sport, step[cart[0]], args.steps // 2))
            polling.join()
            for shape, i in images.items():  # to the numpy array a client wants, and the round trip alone
                add(f"image_json_{shape}", latencies(sport, step[i], args.steps // 4, json_observation))
                add(f"image_msgpack_{shape}", latencies(sport, packed_step[i], args.steps // 4, msgpack_observation))
                add(f"image_json_raw_{shape}", latencies(sport, step[i], args.steps // 4))
                add(f"image_msgpack_raw_{shape}", latencies(sport, packed_step[i], args.steps // 4))
            for n in (1, 4, 16):
                add(f"floor_rps_{n}", throughput(fport, [floor_req] * n, args.seconds))
                add(f"server_rps_{n}", throughput(sport, [step[i] for i in cart[:n]], args.seconds))
            add("batch_16", throughput(sport, [batch_req], args.seconds) * len(cart))  # one client, 16 envs a request
            add("ws_pipelined", ws_throughput(sport, cart[0], args.seconds))
            # CartPole keeps stepping after its episode ends (Gymnasium only warns); reset now and then
            for i in cart:
                c.json("POST", f"/v1/envs/{i}/reset/")
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

        def creates_of(env_id: str, n: int = 50, kwargs: dict | None = None, pooled: bool = False) -> list[float]:
            out = []
            for _ in range(n):
                while pooled and c.json("GET", "/v1/admin/stats")["pool"][env_id] < 4:  # refilled, untimed
                    time.sleep(0.01)
                t = time.perf_counter()
                iid = c.json("POST", "/v1/envs/", {"env_id": env_id, "kwargs": kwargs or {}})["instance_id"]
                out.append(time.perf_counter() - t)
                c.call(http("POST", f"/v1/envs/{iid}/close/"))
            return out

        # creates while 4 clients step their envs as fast as they can (a busy lab server)
        load = threading.Thread(target=throughput, args=(sport, [step[i] for i in cart[:4]], 4.0))
        load.start()
        loaded_creates = creates_of("CartPole-v1", 30)
        load.join()
        for i in [*cart, *images.values()]:
            c.call(http("POST", f"/v1/envs/{i}/close/"))
        creates = creates_of("CartPole-v1")
        module_creates = creates_of("tests.faulty_envs:Slow-v0")  # its module imported at each create
        warm_creates = creates_of(POOLED, 30, pooled=True)
        cold_creates = creates_of(POOLED, 30, kwargs={"max_episode_steps": 500})  # its default: the same env, made cold
        probe = env("tests.faulty_envs:ReportsModules-v0")
        held = c.json("POST", f"/v1/envs/{probe}/reset/")["info"]["server_modules"]
        c.call(http("POST", f"/v1/envs/{probe}/close/"))

        idle = [env("CartPole-v1") for _ in range(args.envs)]
        trees = [[p, *p.children(recursive=True)] for p in env_processes(server)]  # env and its guardian
        before, t0 = sum(me.cpu_times()[:2]), time.perf_counter()
        time.sleep(5)  # the server alone with its idle envs: what its watcher costs
        idle_cpu = (sum(me.cpu_times()[:2]) - before) / (time.perf_counter() - t0)
        mem = [[q.memory_full_info() for q in tree] for tree in trees]
        uss = statistics.mean(sum(m.uss for m in tree) for tree in mem) / 2**20
        pss = statistics.mean(sum(m.pss for m in tree) for tree in mem) / 2**20
        for i in idle:
            c.call(http("POST", f"/v1/envs/{i}/close/"))

        # Hundreds of envs: idle CartPoles added up to each level; at each, one env's step among
        # them, the last creates, a sample's memory, and the server's CPU while they idle.
        crowd: list[str] = []
        lone = env("CartPole-v1")
        lone_step = http("POST", f"/v1/envs/{lone}/step", STEP_BODY)
        scale = {"alone": {"step": latencies(sport, lone_step, args.steps)}}
        for level in levels:
            made = []
            while len(crowd) < level:
                t = time.perf_counter()
                crowd.append(c.json("POST", "/v1/envs/", {"env_id": "CartPole-v1"})["instance_id"])
                made.append(time.perf_counter() - t)
            before, t0 = sum(me.cpu_times()[:2]), time.perf_counter()
            time.sleep(3)
            cpu = (sum(me.cpu_times()[:2]) - before) / (time.perf_counter() - t0)
            sample = [[p, *p.children(recursive=True)] for p in env_processes(server)[:: max(level // 20, 1)]][:20]
            held_by = [[q.memory_full_info() for q in tree] for tree in sample]
            scale[level] = {"step": latencies(sport, lone_step, args.steps), "create": made[-50:], "cpu": cpu,
                            "own": c.json("GET", "/v1/admin/stats")["server"],
                            "uss": statistics.mean(sum(m.uss for m in t) for t in held_by) / 2**20,
                            "pss": statistics.mean(sum(m.pss for m in t) for t in held_by) / 2**20}
            print(f"{level} idle envs measured", file=sys.stderr)
        for i in crowd:
            c.call(http("POST", f"/v1/envs/{i}/close/"))
        scale["alone"]["step"] += latencies(sport, lone_step, args.steps)  # alone again: before and after, pooled
        c.call(http("POST", f"/v1/envs/{lone}/close/"))
        bare = bare_child_uss()
    finally:
        for p in (server, floor, users):
            p.terminate()
            p.wait(30)

    ms = 1e3
    p50 = {k: statistics.median(v) for k, v in res.items()}
    composed = p50["http_floor"] + p50["pipe"] + p50["env_step"]
    rows = [
        ("env.step in-process, p50", f"{p50['env_step'] * 1e6:.1f} us", "", "", ""),
        ("pipe round trip on the event loop, p50", f"{p50['pipe'] * 1e6:.1f} us", "", "", ""),
        ("HTTP floor (bare Litestar) step, p50", f"{p50['http_floor'] * ms:.3f} ms", "", "", ""),
        ("composed floor (HTTP + pipe + step), p50", f"{composed * ms:.3f} ms", "", "", ""),
        ("client's own cost per request", f"{client_cost() * 1e6:.1f} us", "", "", ""),
        ("CartPole step p50", f"{p50['step_cart'] * ms:.3f} ms", "composed floor", f"{p50['step_cart'] / composed:.2f}x", "<= 1.0x"),
        ("API process CPU per CartPole step", f"{p50['cpu_step'] * 1e6:.1f} us", "bare Litestar's per request",
         f"{p50['cpu_step'] / p50['cpu_floor']:.2f}x", "<= 1.0x"),
        ("CartPole step p99", f"{pct(res['step_cart'], 0.99) * ms:.3f} ms", "", "", ""),
        ("CartPole step p50, with --users (50) and a token", f"{p50['step_cart_users'] * ms:.3f} ms", "composed floor",
         f"{p50['step_cart_users'] / composed:.2f}x", "<= 1.1x"),
        ("CartPole step p50 while 2 clients poll env info", f"{p50['step_cart_polled'] * ms:.3f} ms", "", "", ""),
    ]
    for shape in IMAGES:
        js, mp = p50[f"image_json_{shape}"], p50[f"image_msgpack_{shape}"]
        big = shape == IMAGES[0]
        rows += [
            (f"{shape} image step to a numpy array p50, JSON", f"{js * ms:.3f} ms", "", "", ""),
            (f"{shape} image step to a numpy array p50, msgpack", f"{mp * ms:.3f} ms", "JSON", f"{js / mp:.1f}x faster",
             ">= 3x, <= 0.8 ms" if big else ""),
            (f"{shape} image step p99, msgpack", f"{pct(res[f'image_msgpack_{shape}'], 0.99) * ms:.3f} ms", "", "", ""),
        ]
        js, mp = p50[f"image_json_raw_{shape}"], p50[f"image_msgpack_raw_{shape}"]
        rows.append((f"{shape} image step round trip p50 (reply undecoded), msgpack", f"{mp * ms:.3f} ms",
                     f"JSON {js * ms:.3f} ms", f"{js / mp:.1f}x faster", ""))
    for n in (1, 4, 16):
        s, f = p50[f"server_rps_{n}"], p50[f"floor_rps_{n}"]
        rows.append((f"steps/s, {n} clients", f"{s:,.0f}", f"floor {f:,.0f} req/s", f"{s / f:.2f}x",
                     {4: ">= 0.9x", 16: ">= 0.7x"}.get(n, "")))
    rows.append(("steps/s, one WebSocket session, 32 requests ahead", f"{p50['ws_pipelined']:,.0f}",
                 "HTTP, 1 client", f"{p50['ws_pipelined'] / p50['server_rps_1']:.2f}x", ">= 2x"))
    rows.append(("steps/s, one client batching 16 envs a request", f"{p50['batch_16']:,.0f}",
                 "16 clients", f"{p50['batch_16'] / p50['server_rps_16']:.2f}x", ">= 2.5x"))
    rows += [
        ("create p50", f"{statistics.median(creates) * ms:.1f} ms", "", "", "<= 20 ms"),
        ("create p99", f"{pct(creates, 0.99) * ms:.1f} ms", "", "", ""),
        (f"create p50 from the warm pool ({POOLED})", f"{statistics.median(warm_creates) * ms:.2f} ms", "cold",
         f"{statistics.median(warm_creates) / statistics.median(cold_creates):.2f}x", "<= 2 ms"),
        (f"create p50 cold ({POOLED})", f"{statistics.median(cold_creates) * ms:.1f} ms", "", "", "<= 15 ms"),
        ("create p50 while 4 clients step", f"{statistics.median(loaded_creates) * ms:.1f} ms", "", "", ""),
        ("create p50, `module:EnvId` (module imported per create)", f"{statistics.median(module_creates) * ms:.1f} ms",
         "", "", ""),
        ("server modules an env process holds", ", ".join(held) or "none", "", "", "none"),
        (f"idle CartPole env + guardian USS ({len(mem)} open)", f"{uss:.1f} MiB", "", "", "<= 6 MiB"),
        (f"idle CartPole env + guardian PSS ({len(mem)} open)", f"{pss:.1f} MiB", "", "", ""),
        (f"server CPU with {len(mem)} idle envs (its watcher)", f"{idle_cpu * 100:.1f}% of a core", "", "", ""),
    ]
    alone = statistics.median(scale["alone"]["step"])
    rows.append(("a bare forkserver child that made CartPole, USS", f"{bare:.1f} MiB", "", "", ""))
    for level in levels:
        at = scale[level]
        step50 = statistics.median(at["step"])
        rows += [
            (f"{level} idle envs: one env's step p50", f"{step50 * ms:.3f} ms", "alone", f"{step50 / alone:.2f}x", "<= 1.2x"),
            (f"{level} idle envs: env + guardian USS", f"{at['uss']:.1f} MiB", "bare child", f"{at['uss'] / bare:.2f}x",
             "<= 1.2x"),
            (f"{level} idle envs: env + guardian PSS", f"{at['pss']:.1f} MiB", "", "", ""),
            (f"{level} idle envs: create p50 (the last 50)", f"{statistics.median(at['create']) * ms:.1f} ms", "", "", ""),
            (f"{level} idle envs: server CPU", f"{at['cpu'] * 100:.1f}% of a core", "", "", ""),
            (f"{level} idle envs: the API process's threads, asyncio tasks", f"{at['own']['threads']}, {at['own']['tasks']}",
             "", "", "none per env"),
        ]
    print(f"\n{args.rounds} rounds, {os.cpu_count()} cores, Python {sys.version.split()[0]}\n")
    print("| measure | value | against | ratio | target |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
