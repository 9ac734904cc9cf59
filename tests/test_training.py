"""A real training run: Stable-Baselines3's PPO learns CartPole through RemoteEnv."""

import numpy as np
import pytest

from api.client import RemoteEnv
from tests.conftest import Server

pytestmark = pytest.mark.timeout(600)


def mean_return(model: object, env: RemoteEnv, episodes: int) -> float:
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=1000 + i)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=False)  # type: ignore[attr-defined]
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total += reward
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def test_ppo_learns_cartpole_over_http(server: Server) -> None:
    torch = pytest.importorskip("torch")
    sb3 = pytest.importorskip("stable_baselines3")
    torch.set_num_threads(1)
    env = RemoteEnv(server.url, "CartPole-v1", seed=0)
    try:
        model = sb3.PPO("MlpPolicy", env, n_steps=512, batch_size=64, learning_rate=1e-3, seed=0, device="cpu")
        model.set_random_seed(0)
        before = mean_return(model, env, 5)  # the policy as it samples: untrained, about random
        model.learn(total_timesteps=8_000)
        after = mean_return(model, env, 5)
    finally:
        env.close()
    print(f"mean return before {before:.1f}, after {after:.1f}")
    assert after > 2 * before and after >= 100
