"""scripts/bench --backend ray: the Ray backend beside the local one, measured interleaved in
rounds in one run. Both servers are started as users start them (`scripts/serve`); the Ray one
starts its own Ray instance on this machine, or joins --ray-address. Figures: CartPole step p50
and p99, an 84x84x3 image step in msgpack, steps/s of 1 and 4 clients, create p50, and the
envs and steps/s one front server carries at 64 envs."""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from bench import ROOT, STEP_BODY, Raw, free_port, http, latencies, pct, start, throughput
from envproc.wire import encode_msgpack


def serve(port: int, tmp: Path, name: str, *extra: str) -> object:
    return start([str(ROOT / "scripts" / "serve"), "--port", str(port), "--data-dir", str(tmp / "data"),
                  "--allow-module", "tests.faulty_envs", "--log-level", "warning", "--max-envs", "256", *extra],
                 port, tmp / f"{name}.log")


def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gym-supervisor-bench-ray-"))
    ports = {"local": free_port(), "ray": free_port()}
    where = ["--ray-address", args.ray_address] if args.ray_address else []
    servers = {"local": serve(ports["local"], tmp, "local"),
               "ray": serve(ports["ray"], tmp, "ray", "--backend", "ray", "--ray-agent-host", args.ray_agent_host,
                            *where)}
    res: dict[str, list[float]] = {}

    def add(key: str, xs: list[float] | float) -> None:
        res.setdefault(key, []).extend(xs if isinstance(xs, list) else [xs])

    try:
        deadline = time.monotonic() + 120  # the Ray server answers once its agents are up
        while True:
            try:
                Raw(ports["ray"]).json("GET", "/v1/envs/")
                break
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise SystemExit(f"the Ray server did not answer: {(tmp / 'ray.log').read_text()}") from None
                time.sleep(0.2)
        reqs = {}
        for name, port in ports.items():
            c = Raw(port)

            def env(env_id: str, **kwargs: object) -> str:
                iid = c.json("POST", "/v1/envs/", {"env_id": env_id, "kwargs": kwargs})["instance_id"]  # noqa: B023
                c.json("POST", f"/v1/envs/{iid}/reset/")  # noqa: B023
                return iid

            carts = [env("CartPole-v1") for _ in range(4)]
            image = env("tests.faulty_envs:Image-v0", shape=[84, 84, 3])
            reqs[name] = {"carts": [http("POST", f"/v1/envs/{i}/step", STEP_BODY) for i in carts],
                          "image": http("POST", f"/v1/envs/{image}/step", encode_msgpack({"action": 1}), msgpack=True)}
        for r in range(args.rounds):
            for name, port in ports.items():
                add(f"{name}_step", latencies(port, reqs[name]["carts"][0], args.steps))
                add(f"{name}_image", latencies(port, reqs[name]["image"], args.steps // 4))
                add(f"{name}_rps_1", throughput(port, reqs[name]["carts"][:1], args.seconds))
                add(f"{name}_rps_4", throughput(port, reqs[name]["carts"], args.seconds))
                c = Raw(port)
                for _ in range(10):
                    t = time.perf_counter()
                    iid = c.json("POST", "/v1/envs/", {"env_id": "CartPole-v1"})["instance_id"]
                    add(f"{name}_create", time.perf_counter() - t)
                    c.call(http("POST", f"/v1/envs/{iid}/close/"))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        # What one front server carries: 64 envs stepped by 16 clients, 4 envs each in turn.
        for name, port in ports.items():
            c = Raw(port)
            many = [c.json("POST", "/v1/envs/", {"env_id": "CartPole-v1"})["instance_id"] for _ in range(64)]
            for iid in many:
                c.json("POST", f"/v1/envs/{iid}/reset/")
            add(f"{name}_rps_64", throughput(port, [http("POST", f"/v1/envs/{i}/step", STEP_BODY) for i in many[:16]],
                                             args.seconds * 2))
            nodes = c.json("GET", "/v1/admin/stats")["nodes"]
            res[f"{name}_nodes"] = [float(len(nodes) or 1)]
            for iid in many:
                c.call(http("POST", f"/v1/envs/{iid}/close/"))
    finally:
        for proc in servers.values():
            proc.terminate()
            proc.wait(60)

    p50 = {k: statistics.median(v) for k, v in res.items()}
    ms = 1e3
    p99 = {k: pct(v, 99) for k, v in res.items()}
    rows = [  # label, figure, which statistic, how it reads
        ("CartPole step p50", "step", p50, lambda v: f"{v * ms:.3f} ms"),
        ("CartPole step p99", "step", p99, lambda v: f"{v * ms:.3f} ms"),
        ("84x84x3 image step p50 (msgpack)", "image", p50, lambda v: f"{v * ms:.3f} ms"),
        ("steps/s, 1 client", "rps_1", p50, lambda v: f"{v:,.0f}"),
        ("steps/s, 4 clients", "rps_4", p50, lambda v: f"{v:,.0f}"),
        ("steps/s, 16 clients over 64 envs", "rps_64", p50, lambda v: f"{v:,.0f}"),
        ("create p50 (CartPole, cold)", "create", p50, lambda v: f"{v * ms:.1f} ms"),
    ]
    print(f"\n{args.rounds} rounds, interleaved; nodes: {p50['ray_nodes']:.0f} "
          f"({'joined ' + args.ray_address if args.ray_address else 'a Ray instance the server started here'})")
    print(f"| {'figure':<36} | {'local':>10} | {'ray':>10} | {'ray / local':>11} |")
    print(f"|{'-' * 38}|{'-' * 12}|{'-' * 12}|{'-' * 13}|")
    for label, key, stat, fmt in rows:
        lo, ra = stat[f"local_{key}"], stat[f"ray_{key}"]
        print(f"| {label:<36} | {fmt(lo):>10} | {fmt(ra):>10} | {ra / lo:>10.2f}x |")
    print(msgspec.json.encode({k: round(v, 6) for k, v in p50.items()}).decode(), file=sys.stderr)
