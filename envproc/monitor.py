"""Episode statistics and videos in the files of the old gym Monitor, so old tools read them."""

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envproc.video import EpisodeVideo, check_available

PREFIX = "openaigym."


class MonitorRefused(ValueError):
    """The monitor cannot start as asked: a used directory, or video the env cannot give."""


class Monitor:
    """Owns one monitor run: its directory, episode lengths, rewards, timestamps and videos."""

    def __init__(
        self, directory: str, run: int, force: bool, resume: bool,
        video_every: int = 0, render: Callable[[], Any] | None = None, fps: float = 30,
    ) -> None:
        if video_every:
            if render is None:
                raise MonitorRefused(
                    "this env cannot record video: create it with kwargs {\"render_mode\": \"rgb_array\"}, "
                    "or start the monitor with video_callable false"
                )
            check_available()
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        old = sorted(p.name for p in self.dir.iterdir() if p.name.startswith(PREFIX))
        if force:
            for name in old:
                (self.dir / name).unlink()
        elif old and not resume:
            raise MonitorRefused(
                f"monitor directory {directory} already holds monitor files ({', '.join(old[:3])}...); "
                "use a new directory for each run, or pass force=true to clear it or resume=true to add to it"
            )
        self.name = f"{PREFIX}%s.{run}.{os.getpid()}"
        self.path = self.dir / f"{self.name % 'episode_batch'}.stats.json"
        self.video_every, self.render, self.fps = video_every, render, fps
        self.initial_reset: float | None = None
        self.lengths: list[int] = []
        self.rewards: list[float] = []
        self.timestamps: list[float] = []
        self.videos: list[str] = []
        self.video: EpisodeVideo | None = None
        self.episodes = 0  # episodes begun: the old Monitor's episode_id
        self.steps = 0
        self.reward = 0.0
        self.in_episode = False

    def on_reset(self) -> None:
        if self.initial_reset is None:
            self.initial_reset = time.time()
        self._end_video()  # an episode cut short by reset keeps the frames it had
        if self.video_every and self.episodes % self.video_every == 0:
            path = self.dir / f"{self.name % 'video'}.video{self.episodes:06d}.mp4"
            self.video = EpisodeVideo(path, self.episodes, self.fps)
            self.videos.append(path.name)
            self._frame()
        self.episodes += 1
        self.steps, self.reward, self.in_episode = 0, 0.0, True

    def on_step(self, reward: float, episode_over: bool) -> None:
        self.steps += 1
        self.reward += reward
        self._frame()
        if episode_over and self.in_episode:
            self.lengths.append(self.steps)
            self.rewards.append(self.reward)
            self.timestamps.append(time.time())
            self.in_episode = False
            self._end_video()
            self.flush()

    def close(self) -> None:
        self._end_video()
        self.flush()

    def flush(self) -> None:
        stats = {
            "initial_reset_timestamp": self.initial_reset,
            "timestamps": self.timestamps,
            "episode_lengths": self.lengths,
            "episode_rewards": self.rewards,
            "episode_types": ["t"] * len(self.lengths),
        }
        _write_json(self.path, stats)
        manifest = {
            "stats": self.path.name,
            "videos": [[v, v.removesuffix(".mp4") + ".meta.json"] for v in self.videos],
        }
        _write_json(self.dir / f"{self.name % 'manifest'}.manifest.json", manifest)

    def _frame(self) -> None:
        if self.video is not None and self.render is not None:
            self.video.add(self.render())

    def _end_video(self) -> None:
        if self.video is not None:
            self.video.close()
            self.video = None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)  # a reader never sees half a file
