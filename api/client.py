"""A Python client: the seed's Client, a Gymnasium Env over HTTP, and a vector env of them.

Importing it loads httpx, numpy and Gymnasium, not the server (no Litestar, uvicorn or supervisor).
"""

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import gymnasium as gym
import httpx
import msgspec
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from envproc.convert import build, from_json, to_json
from envproc.png import decode_png
from envproc.wire import JSON, MSGPACK, arrays, encode_msgpack

MARGIN = 5.0  # seconds the HTTP read waits beyond the server-side timeout, so the server's 504 arrives


class ServerError(Exception):
    """The server answered with an error; `message` is its explanation, as in the seed's client."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class EnvGone(ServerError): ...  # 410: the env died earlier; close it and create another


class EnvCrashed(ServerError): ...  # 502: the env process died during the request


class EnvTimeout(ServerError): ...  # 504: no answer in time (the env was killed, or was busy and the request not run)


class ServerFull(ServerError):
    """503: the server runs its limit of envs (`retry_after` seconds is its advice), or is
    shutting down (`retry_after` None)."""

    def __init__(self, message: str, status_code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status_code)
        self.retry_after = retry_after


class NotSignedIn(ServerError): ...  # 401: the server has users, and this client gave no token of one of them


class Forbidden(ServerError): ...  # 403: the token's role may not do this


class QuotaExceeded(ServerError): ...  # 429: this user runs as many envs as their quota allows


ERRORS: dict[int, type[ServerError]] = {401: NotSignedIn, 403: Forbidden, 410: EnvGone, 429: QuotaExceeded,
                                        502: EnvCrashed, 503: ServerFull, 504: EnvTimeout}
TOKEN_VARIABLE = "GYM_SUPERVISOR_TOKEN"  # the token, where the code gives none: old scripts run unchanged


class Client:
    """Every method of the seed's client, with the same names and return values, on keep-alive
    connections; new parameters are keyword-only. `timeout` (seconds) is sent to the server as
    X-Request-Timeout, per call or as the default given here."""

    def __init__(self, remote_base: str, timeout: float | None = None, *, token: str | None = None,
                 msgpack: bool = False) -> None:
        self.remote_base = remote_base.rstrip("/")
        self.timeout = timeout
        token = token or os.environ.get(TOKEN_VARIABLE)
        headers = {"Content-Type": JSON} | ({"Authorization": f"Bearer {token}"} if token else {})
        if msgpack:  # asked for; a server that does not speak it (the seed) answers JSON, read as such
            headers["Accept"] = f"{MSGPACK}, {JSON};q=0.5"
        self.msgpack = msgpack
        self.speaks_msgpack = False  # the server answered in msgpack: bodies go in it too from then on
        self.session = httpx.Client(base_url=self.remote_base, headers=headers)

    def _request(self, method: str, route: str, data: Any = None, timeout: float | None = None,
                 raw: bool = False) -> Any:
        timeout = self.timeout if timeout is None else timeout
        headers = {"X-Request-Timeout": f"{timeout:g}"} if timeout is not None else {}
        read = None if timeout is None else timeout + MARGIN
        if self.speaks_msgpack:
            headers["Content-Type"] = MSGPACK
            content, data = (None if data is None else encode_msgpack(data)), None
        else:
            content = None
        resp = self.session.request(method, route, json=data, content=content, headers=headers,
                                    timeout=httpx.Timeout(10.0, read=read))
        if resp.status_code >= 400:
            try:
                message = self._decoded(resp)["message"]
            except (ValueError, KeyError, TypeError, msgspec.DecodeError):
                message = resp.text or resp.reason_phrase
            if resp.status_code == 503:
                retry = resp.headers.get("Retry-After")
                raise ServerFull(message, 503, float(retry) if retry and retry.isdigit() else None)
            raise ERRORS.get(resp.status_code, ServerError)(message, resp.status_code)
        if raw:
            return resp.content
        return self._decoded(resp) if resp.content else None

    def _decoded(self, resp: httpx.Response) -> Any:
        if resp.headers.get("content-type", "").startswith(MSGPACK):
            self.speaks_msgpack = True
            return arrays(msgspec.msgpack.decode(resp.content))
        return resp.json()

    # --- the seed's methods ---

    def env_create(self, env_id: str, *, seed: int | None = None, timeout: float | None = None,
                   restart: dict[str, float] | None = None, **kwargs: Any) -> str:
        data: dict[str, Any] = {"env_id": env_id, "seed": seed, "kwargs": kwargs}
        if restart:
            data["restart"] = restart
        return self._request("POST", "/v1/envs/", data, timeout)["instance_id"]

    def env_list_all(self, *, timeout: float | None = None) -> dict[str, str]:
        return self._request("GET", "/v1/envs/", timeout=timeout)["all_envs"]

    def env_reset(self, instance_id: str, *, seed: int | None = None, options: dict[str, Any] | None = None,
                  timeout: float | None = None) -> Any:
        return self.env_reset_info(instance_id, seed=seed, options=options, timeout=timeout)[0]

    def env_reset_info(self, instance_id: str, *, seed: int | None = None, options: dict[str, Any] | None = None,
                       timeout: float | None = None) -> tuple[Any, dict[str, Any]]:
        body = self._request("POST", f"/v1/envs/{instance_id}/reset/", {"seed": seed, "options": options}, timeout)
        return body["observation"], body.get("info", {})

    def env_step(self, instance_id: str, action: Any, render: bool = False, *, timeout: float | None = None) -> list[Any]:
        body = self.env_step_full(instance_id, action, render, timeout=timeout)
        return [body["observation"], body["reward"], body["done"], body["info"]]

    def env_step_full(self, instance_id: str, action: Any, render: bool = False, *,
                      timeout: float | None = None) -> dict[str, Any]:
        """The whole step reply: also `terminated` and `truncated`."""
        return self._request("POST", f"/v1/envs/{instance_id}/step/", {"action": action, "render": render}, timeout)

    def env_action_space_info(self, instance_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self._request("GET", f"/v1/envs/{instance_id}/action_space/", timeout=timeout)["info"]

    def env_action_space_sample(self, instance_id: str, *, timeout: float | None = None) -> Any:
        return self._request("GET", f"/v1/envs/{instance_id}/action_space/sample", timeout=timeout)["action"]

    def env_action_space_contains(self, instance_id: str, x: Any, *, timeout: float | None = None) -> bool:
        return self._request("GET", f"/v1/envs/{instance_id}/action_space/contains/{x}", timeout=timeout)["member"]

    def env_observation_space_info(self, instance_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self._request("GET", f"/v1/envs/{instance_id}/observation_space/", timeout=timeout)["info"]

    def env_observation_space_contains(self, instance_id: str, params: dict[str, Any], *,
                                       timeout: float | None = None) -> bool:
        return self._request("POST", f"/v1/envs/{instance_id}/observation_space/contains", params, timeout)["member"]

    def env_monitor_start(self, instance_id: str, directory: str, force: bool = False, resume: bool = False,
                          video_callable: bool | int = False, *, timeout: float | None = None) -> None:
        data = {"directory": directory, "force": force, "resume": resume, "video_callable": video_callable}
        self._request("POST", f"/v1/envs/{instance_id}/monitor/start/", data, timeout)

    def env_monitor_close(self, instance_id: str, *, timeout: float | None = None) -> None:
        self._request("POST", f"/v1/envs/{instance_id}/monitor/close/", None, timeout)

    def env_close(self, instance_id: str, *, timeout: float | None = None) -> None:
        self._request("POST", f"/v1/envs/{instance_id}/close/", None, timeout)

    def upload(self, training_dir: str, algorithm_id: str | None = None, api_key: str | None = None, *,
               timeout: float | None = None) -> None:
        data = {"training_dir": training_dir, "algorithm_id": algorithm_id, "api_key": api_key}
        self._request("POST", "/v1/upload/", data, timeout)

    def shutdown_server(self, *, timeout: float | None = None) -> None:
        self._request("POST", "/v1/shutdown/", None, timeout)

    # --- what this server adds ---

    def env_info(self, instance_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self._request("GET", f"/v1/envs/{instance_id}/", timeout=timeout)

    def env_restart(self, instance_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self._request("POST", f"/v1/envs/{instance_id}/restart/", None, timeout)

    def batch_step(self, steps: list[tuple[str, Any]], *, autoreset: bool = False,
                   timeout: float | None = None) -> list[dict[str, Any]]:
        """Step several envs in one request: `steps` is [(instance_id, action)]; each result is
        the step route's reply plus its `status` (or `status` and `message`)."""
        body = {"steps": [{"instance_id": i, "action": a} for i, a in steps], "autoreset": autoreset}
        return self._request("POST", "/v1/batch/step", body, timeout)["results"]

    def env_render(self, instance_id: str, *, timeout: float | None = None) -> np.ndarray:
        """The env's current frame, height x width x 3 (envs made with render_mode rgb_array)."""
        return decode_png(self._request("GET", f"/v1/envs/{instance_id}/render", timeout=timeout, raw=True))

    def admin_envs(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """Every env of every user (viewers and admins)."""
        return self._request("GET", "/v1/admin/envs", timeout=timeout)["envs"]

    def admin_kill(self, instance_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Kill any user's env now (admins)."""
        return self._request("POST", f"/v1/admin/envs/{instance_id}/kill", timeout=timeout)

    def close(self) -> None:
        self.session.close()


class Session:
    """One env's WebSocket session (`WS /v1/envs/{id}/session`): each call one message, answered
    in order; msgpack in binary frames when the client asks for msgpack, else JSON in text."""

    def __init__(self, client: Client, instance_id: str) -> None:
        from websockets.exceptions import ConnectionClosed  # only RemoteEnv(transport="websocket") needs them
        from websockets.sync.client import connect

        self.closed_error = ConnectionClosed
        self.client = client
        base = client.remote_base.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        query = f"?timeout={client.timeout:g}" if client.timeout is not None else ""
        auth = client.session.headers.get("Authorization")
        self._held = ExitStack()  # connect() is a context manager; the session outlives this call
        self.ws = self._held.enter_context(connect(f"{base}/v1/envs/{instance_id}/session{query}", compression=None,
                                                   max_size=None,
                                                   additional_headers={"Authorization": auth} if auth else None))

    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        binary = self.client.msgpack
        timeout = None if self.client.timeout is None else self.client.timeout + MARGIN
        try:
            self.ws.send(encode_msgpack(message) if binary else msgspec.json.encode(message).decode())
            raw = self.ws.recv(timeout=timeout)
        except self.closed_error as exc:
            raise EnvGone(f"the session is closed ({exc}); create another env", 410) from None
        except TimeoutError:  # its late answer would be read as the next one's: the session ends here
            self.close()
            raise EnvTimeout(f"no answer within {timeout:g} s; the session is closed", 504) from None
        reply = arrays(msgspec.msgpack.decode(raw)) if isinstance(raw, bytes) else msgspec.json.decode(raw)
        status = reply.pop("status")
        if status != 200:
            raise ERRORS.get(status, ServerError)(reply["message"], status)
        return reply

    def close(self) -> None:
        self._held.close()


class RemoteEnv(gym.Env):
    """A Gymnasium env whose every call goes to a gym-supervisor server.

    `seed` is create's seed: the first unseeded reset() equals a local reset(seed=seed).
    `msgpack`: ask for msgpack replies, arrays as raw bytes (a server that answers JSON, such as
    the seed, is read in JSON); observations are the same arrays either way. `transport`:
    "http", a request per call, or "websocket", reset and step over one WebSocket session.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, base_url: str, env_id: str, seed: int | None = None, timeout: float | None = None,
                 *, token: str | None = None, msgpack: bool = True, transport: str = "http",
                 **make_kwargs: Any) -> None:
        if transport not in ("http", "websocket"):
            raise ValueError(f"transport must be 'http' or 'websocket', not {transport!r}")
        self.client = Client(base_url, timeout=timeout, token=token, msgpack=msgpack)
        self._session: Session | None = None
        try:
            self.instance_id = self.client.env_create(env_id, seed=seed, **make_kwargs)
        except BaseException:
            self.client.close()
            raise
        self._closed = False
        try:
            self.action_space = build(self.client.env_action_space_info(self.instance_id))
            self.observation_space = build(self.client.env_observation_space_info(self.instance_id))
            if transport == "websocket":
                self._session = Session(self.client, self.instance_id)
        except BaseException:
            self.close()  # the env exists on the server: it must not be left there
            raise
        self.render_mode = make_kwargs.get("render_mode")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        if self._session is not None:
            body = self._session.call({"op": "reset", "seed": seed, "options": options})
            obs, info = body["observation"], body["info"]
        else:
            obs, info = self.client.env_reset_info(self.instance_id, seed=seed, options=options)
        return from_json(self.observation_space, obs), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        action = to_json(self.action_space, action, self.client.speaks_msgpack)
        if self._session is not None:
            body = self._session.call({"op": "step", "action": action})
        else:
            body = self.client.env_step_full(self.instance_id, action)
        obs = from_json(self.observation_space, body["observation"])
        return obs, body["reward"], body["terminated"], body["truncated"], body["info"]

    def render(self) -> np.ndarray | None:
        """The remote env's frame (render_mode rgb_array), as a local env's render() gives it."""
        if self.render_mode != "rgb_array":
            return None
        return self.client.env_render(self.instance_id)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                if self._session is not None:
                    self._session.close()
                self.client.env_close(self.instance_id)
            finally:
                self.client.close()


class RemoteVectorEnv(VectorEnv):
    """N remote envs stepped concurrently, one request per env in flight, autoreset in
    Gymnasium's next-step mode. If any of them cannot be created, those that were are closed."""

    def __init__(self, base_url: str, env_id: str, num_envs: int, seed: int | None = None,
                 *, token: str | None = None, msgpack: bool = True, **make_kwargs: Any) -> None:
        self._pool = ThreadPoolExecutor(max_workers=num_envs, thread_name_prefix="remote-env")
        make = lambda i: RemoteEnv(base_url, env_id, None if seed is None else seed + i,  # noqa: E731
                                   token=token, msgpack=msgpack, **make_kwargs)
        futures = [self._pool.submit(make, i) for i in range(num_envs)]
        made = [f.result() for f in futures if f.exception() is None]
        failed = next((f.exception() for f in futures if f.exception() is not None), None)
        if failed is not None:
            for env in made:
                env.close()
            self._pool.shutdown()
            raise failed
        self.envs = made
        self.num_envs = num_envs
        self.single_action_space = self.envs[0].action_space
        self.single_observation_space = self.envs[0].observation_space
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}
        self._autoreset = np.zeros(num_envs, dtype=np.bool_)
        self._batches = True  # the server steps them all in one request (a seed server cannot)

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else seed or [None] * self.num_envs
        results = list(self._pool.map(lambda e, s: e.reset(seed=s, options=options), self.envs, seeds))
        self._autoreset[:] = False
        return self._batch([obs for obs, _ in results]), self._infos([info for _, info in results])

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        def one(i: int, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
            if self._autoreset[i]:
                obs, info = self.envs[i].reset()
                return obs, 0.0, False, False, info
            return self.envs[i].step(action)

        results = None
        if self._batches:
            try:
                results = self._step_batch(actions)
            except ServerError as exc:
                if exc.status_code not in (404, 405):
                    raise
                self._batches = False  # a server without the batch route: one request per env
        if results is None:
            results = list(self._pool.map(one, range(self.num_envs), iterate(self.action_space, actions)))
        terminated = np.array([r[2] for r in results], dtype=np.bool_)
        truncated = np.array([r[3] for r in results], dtype=np.bool_)
        self._autoreset = terminated | truncated
        rewards = np.array([r[1] for r in results], dtype=np.float64)
        return self._batch([r[0] for r in results]), rewards, terminated, truncated, self._infos([r[4] for r in results])

    def _step_batch(self, actions: Any) -> list[tuple[Any, float, bool, bool, dict[str, Any]]]:
        """One batch request; the server resets an env whose episode ended at its next step."""
        binary = self.envs[0].client.speaks_msgpack
        steps = [(env.instance_id, to_json(env.action_space, a, binary))
                 for env, a in zip(self.envs, iterate(self.action_space, actions))]
        replies = self.envs[0].client.batch_step(steps, autoreset=True)
        out = []
        for env, r in zip(self.envs, replies, strict=True):
            if r["status"] != 200:
                raise ERRORS.get(r["status"], ServerError)(r["message"], r["status"])
            obs = from_json(env.observation_space, r["observation"])
            out.append((obs, r["reward"], r["terminated"], r["truncated"], r["info"]))
        return out

    def close_extras(self, **kwargs: Any) -> None:
        list(self._pool.map(lambda e: e.close(), self.envs))
        self._pool.shutdown()

    def _batch(self, observations: list[Any]) -> Any:
        out = create_empty_array(self.single_observation_space, self.num_envs)
        return concatenate(self.single_observation_space, observations, out)

    def _infos(self, infos: list[dict[str, Any]]) -> dict[str, Any]:
        batched: dict[str, Any] = {}
        for i, info in enumerate(infos):
            batched = self._add_info(batched, info, i)
        return batched
