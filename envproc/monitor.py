"""Episode statistics in the files of the old gym Monitor, so old tools still read them."""

import json
import os
import time
from pathlib import Path

PREFIX = "openaigym."


class MonitorInUse(ValueError):
    """The directory holds another run's files and neither force nor resume was asked."""


class EpisodeStats:
    """Owns one monitor run: its directory, its episode lengths, rewards and timestamps."""

    def __init__(self, directory: str, run: int, force: bool, resume: bool) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        old = sorted(p.name for p in self.dir.iterdir() if p.name.startswith(PREFIX))
        if force:
            for name in old:
                (self.dir / name).unlink()
        elif old and not resume:
            raise MonitorInUse(
                f"monitor directory {directory} already holds monitor files ({', '.join(old[:3])}...); "
                "use a new directory for each run, or pass force=true to clear it or resume=true to add to it"
            )
        self.path = self.dir / f"{PREFIX}episode_batch.{run}.{os.getpid()}.stats.json"
        self.initial_reset: float | None = None
        self.lengths: list[int] = []
        self.rewards: list[float] = []
        self.timestamps: list[float] = []
        self.steps = 0
        self.reward = 0.0
        self.in_episode = False

    def on_reset(self) -> None:
        if self.initial_reset is None:
            self.initial_reset = time.time()
        self.steps, self.reward, self.in_episode = 0, 0.0, True

    def on_step(self, reward: float, episode_over: bool) -> None:
        self.steps += 1
        self.reward += reward
        if episode_over and self.in_episode:
            self.lengths.append(self.steps)
            self.rewards.append(self.reward)
            self.timestamps.append(time.time())
            self.in_episode = False
            self.flush()

    def flush(self) -> None:
        stats = {
            "initial_reset_timestamp": self.initial_reset,
            "timestamps": self.timestamps,
            "episode_lengths": self.lengths,
            "episode_rewards": self.rewards,
            "episode_types": ["t"] * len(self.lengths),
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats))
        tmp.replace(self.path)  # a reader never sees half a file
