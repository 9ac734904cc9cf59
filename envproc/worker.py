"""The env process: build one env, then answer requests from the pipe until closed."""

import importlib
import os
import sys
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym
import msgspec
import numpy as np

from envproc import guardian, inherited, limits, sandbox
from envproc.convert import BadValue, describe, from_json, parse_scalar, to_json
from envproc.monitor import Monitor, MonitorRefused
from envproc.protocol import (
    EXIT_OUT_OF_MEMORY,
    ActionContains,
    AnyRequest,
    Close,
    Done,
    Make,
    MonitorClose,
    MonitorStart,
    ObservationContains,
    Raised,
    Render,
    Reply,
    Seed,
    Reset,
    Sample,
    SpaceInfo,
    Step,
    StepReply,
    decode_request,
)
from envproc.protocol import encode as encode_message
from envproc.png import encode_png
from envproc.video import VideoUnavailable
from envproc.wire import BadArray, arrays, encode, encode_json


class Usage(Exception):
    """The client asked for something the env cannot do as asked: a 400, not the env's fault."""


class BadBody(Usage):
    """The request body itself is unreadable or lacks a parameter: reported in the seed's words."""


class LookupFailed(Exception):
    """gymnasium.make found no such env id."""


class MakeFailed(Exception):
    """The env could not be made: its module's import or gymnasium.make raised."""


# Where env modules are looked for, first on sys.path; the forkserver sets it (for messages).
ENV_PATH: tuple[str, ...] = ()


def import_env_module(module: str, env_id: str) -> None:
    """Import the module of a `module:EnvId` id, telling a module that is not there (the
    client's or the admin's mistake) from one that fails as it is imported (its own)."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module + ".").startswith(exc.name + "."):
            searched = ", ".join(ENV_PATH) or "no directory"
            raise BadBody(
                f"env id '{env_id}': there is no module '{module}' ({exc}) in the server's env path "
                f"({searched}) nor among its installed packages; the admin can add its directory "
                "with --env-path DIR"
            ) from None
        raise MakeFailed(f"importing its module '{module}' raised {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise MakeFailed(f"importing its module '{module}' raised {type(exc).__name__}: {exc}") from exc


class StepBody(msgspec.Struct):
    action: Any = None
    render: Any = False


_decode_step = msgspec.json.Decoder(StepBody | None).decode
_decode_step_msgpack = msgspec.msgpack.Decoder(StepBody | None).decode


def parse_step(body: bytes, msgpack: bool = False) -> StepBody:
    """The step body as the seed reads it: `action` required, `render` optional; in msgpack,
    an action may hold arrays as raw bytes (envproc/wire.py)."""
    what = "valid msgpack" if msgpack else "a valid json"
    try:
        if msgpack:
            args = _decode_step_msgpack(body) if body else None
            if args is not None:
                args.action = arrays(args.action)
        else:
            args = _decode_step(body) if body.strip() else None
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise BadBody(f"Request is not {what}") from None
    except RecursionError:
        raise BadBody(f"Request is not {what}: it is nested too deeply") from None
    except BadArray as exc:
        raise BadBody(f"Request's action is not a value: {exc}") from None
    args = args or StepBody()
    action = args.action
    if action.size == 0 if isinstance(action, np.ndarray) else action is None or action == "" or action == []:
        raise BadBody("A required request parameter 'action' was not provided")
    return args


class EnvServer:
    """Owns the env, the seed its first reset takes, and the running monitor."""

    def __init__(self, req: Make) -> None:
        module, colon, name = req.env_id.partition(":")
        if colon:
            import_env_module(module, req.env_id)
        else:
            name = module
        try:
            gym.spec(name)
        except gym.error.Error as exc:
            raise LookupFailed(str(exc)) from None
        try:
            self.env = gym.make(req.env_id, **req.kwargs)
        except Exception as exc:
            raise MakeFailed(f"gymnasium.make raised {type(exc).__name__}: {exc}") from exc
        self.pending_seed = req.seed
        if req.seed is not None:
            self.env.action_space.seed(req.seed)
        self.monitor: Monitor | None = None
        self.monitor_runs = 0
        self.episode_over = False  # the last step ended its episode (for an autoreset step)

    def handle(self, req: AnyRequest) -> bytes:
        env, binary = self.env, req.binary

        def out(value: Any) -> bytes:
            return encode(value, binary)

        match req:
            case Step(body=body, autoreset=autoreset, msgpack_body=msgpack_body):
                args = parse_step(body, msgpack_body)
                if autoreset and self.episode_over:  # the action is ignored, as vector envs do
                    obs, info = self._reset(None, None)
                    return out(StepReply(to_json(env.observation_space, obs, binary), 0.0, False, info, False, False))
                try:
                    action = from_json(env.action_space, args.action)
                except BadValue as exc:
                    raise Usage(f"action {exc}") from None
                if args.render and env.render_mode is not None:
                    env.render()
                obs, reward, terminated, truncated, info = env.step(action)
                self.episode_over = bool(terminated or truncated)
                if self.monitor:
                    self.monitor.on_step(float(reward), terminated or truncated)
                return out(
                    StepReply(to_json(env.observation_space, obs, binary), float(reward), bool(terminated or truncated),
                              info, bool(terminated), bool(truncated))
                )
            case Reset(seed=seed, options=options):
                obs, info = self._reset(seed, options)
                return out({"observation": to_json(env.observation_space, obs, binary), "info": info})
            case SpaceInfo(space=space):
                return out({"info": describe(getattr(env, f"{space}_space"))})
            case Sample():
                return out({"action": to_json(env.action_space, env.action_space.sample(), binary)})
            case ActionContains(x=x):
                try:
                    member = env.action_space.contains(from_json(env.action_space, parse_scalar(x)))
                except BadValue:
                    member = False
                return out({"member": bool(member)})
            case ObservationContains(props=props):
                info = describe(env.observation_space)
                member = all(k in info and encode_json(info[k]) == encode_json(v) for k, v in props.items())
                return out({"member": member})
            case MonitorStart():
                self._close_monitor()
                self.monitor_runs += 1
                rgb = env.render if env.render_mode == "rgb_array" else None
                fps = env.metadata.get("render_fps") or 30
                try:
                    self.monitor = Monitor(req.directory, self.monitor_runs, req.force, req.resume, req.video_every, rgb, fps)
                except MonitorRefused as exc:
                    raise Usage(str(exc)) from None
                return b""
            case MonitorClose():
                self._close_monitor()
                return b""
            case Seed(seed=seed):
                self.pending_seed = seed
                if seed is not None:
                    env.action_space.seed(seed)
                return b""
            case Render():
                if env.render_mode != "rgb_array":
                    raise Usage(f"this env renders no frames (its render_mode is {env.render_mode!r}); create it "
                                "with kwargs {\"render_mode\": \"rgb_array\"} to see them")
                frame = env.render()
                try:
                    return encode_png(frame)
                except ValueError as exc:
                    raise Usage(f"its render() gave no RGB frame: {exc}") from None
            case Close():
                self._close_monitor()
                env.close()
                return b""
        raise Usage(f"unexpected request {type(req).__name__}")

    def _reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        if seed is None:
            seed = self.pending_seed
        self.pending_seed = None  # create's seed is for the first reset only
        obs, info = self.env.reset(seed=seed, options=options)
        self.episode_over = False
        if self.monitor:
            self.monitor.on_reset()
        return obs, info

    def _close_monitor(self) -> None:
        if self.monitor:
            self.monitor.close()
            self.monitor = None


def _raised(seq: int, exc: BaseException) -> Raised:
    if isinstance(exc, BadBody):
        kind = "request"
    elif isinstance(exc, MakeFailed):
        kind = "make"
    elif isinstance(exc, VideoUnavailable):
        kind = "unavailable"
    elif isinstance(exc, (Usage, gym.error.ResetNeeded)):
        kind = "usage"
    elif isinstance(exc, LookupFailed):
        kind = "lookup"
    else:
        kind = "env"
    return Raised(seq, kind, type(exc).__name__, str(exc))


def main(conn: Connection, output: Connection) -> None:
    """Process target: one env's whole life."""
    os.setsid()  # our own process group, so that kill takes helpers too
    for fd in (1, 2):  # the server reads what we print, so a flood never blocks us or fills its log
        os.dup2(output.fileno(), fd)
    output.close()  # now, not at garbage collection, when its number may be an env's file
    sys.stdout.reconfigure(line_buffering=True)  # a crash must not lose what was printed
    sys.stderr.reconfigure(line_buffering=True)
    guardian.die_with_parent()  # the forkserver ends with the server, and we with it
    inherited.close_all_but({conn.fileno()})
    try:
        first = decode_request(conn.recv_bytes())
    except EOFError:
        return
    assert isinstance(first, Make)
    try:
        limits.apply(first.limits)
        if first.limits.no_network:
            sandbox.unshare_network()
        sandbox.drop_privileges(first.limits.uid, first.limits.gid)
        guardian.die_with_parent()  # a change of user clears the parent-death signal
        guardian.start(first.limits.own_uid)  # in the env's cgroup, before env code: when we end, so do our helpers
        server = EnvServer(first)
    except MemoryError:
        os._exit(EXIT_OUT_OF_MEMORY)
    except BaseException as exc:
        conn.send_bytes(encode_message(_raised(first.seq, exc)))
        return
    conn.send_bytes(encode_message(Done(first.seq, b"")))
    while True:
        try:
            req = decode_request(conn.recv_bytes())
        except EOFError:
            return  # the server is gone
        reply: Reply
        try:
            reply = Done(req.seq, server.handle(req))
        except MemoryError:
            os._exit(EXIT_OUT_OF_MEMORY)  # half-built state, maybe no memory to reply with: end here
        except Exception as exc:  # the env failed, not us: report it and keep serving
            reply = _raised(req.seq, exc)
        conn.send_bytes(encode_message(reply))
        if isinstance(req, Close):
            return
