"""A random agent on RemoteEnv, as the seed's example agent was on its client.

Run `scripts/serve` in one shell, then `.venv/bin/python scripts/example_agent.py` in another.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.client import RemoteEnv  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", default="http://127.0.0.1:5000")
    ap.add_argument("--env-id", default="CartPole-v1")
    ap.add_argument("--episodes", type=int, default=10)
    args = ap.parse_args()
    env = RemoteEnv(args.url, args.env_id, seed=0)
    env.action_space.seed(0)
    try:
        for episode in range(args.episodes):
            obs, info = env.reset()
            done, total, steps = False, 0.0, 0
            while not done:
                obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
                total, steps, done = total + reward, steps + 1, terminated or truncated
            print(f"episode {episode}: {steps} steps, return {total:g}")
    finally:
        env.close()


if __name__ == "__main__":
    main()
