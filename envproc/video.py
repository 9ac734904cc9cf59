"""One episode's frames written as an mp4 file, with PyAV (the optional `video` extra)."""

import json
from pathlib import Path

import numpy as np


class VideoUnavailable(RuntimeError):
    """PyAV is not installed, so no video can be written."""


def check_available() -> None:
    try:
        import av  # noqa: F401
    except ImportError:
        raise VideoUnavailable(
            "recording video needs the optional dependency PyAV: pip install 'gym-supervisor[video]'"
        ) from None


class EpisodeVideo:
    """Owns one open video file and its metadata file, from first frame to close."""

    def __init__(self, path: Path, episode_id: int, fps: float) -> None:
        import av

        self.path = path
        self.episode_id = episode_id
        self._container = av.open(str(path), mode="w")
        self._stream = self._container.add_stream("h264", rate=max(1, round(fps)))
        self._stream.pix_fmt = "yuv420p"
        self._av = av
        self._sized = False
        self.frames = 0

    def add(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame, dtype=np.uint8)
        h, w = frame.shape[0] - frame.shape[0] % 2, frame.shape[1] - frame.shape[1] % 2
        frame = np.ascontiguousarray(frame[:h, :w, :3])  # yuv420p needs even sizes
        if not self._sized:
            self._stream.width, self._stream.height = w, h
            self._sized = True
        for packet in self._stream.encode(self._av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._sized:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        meta = {"episode_id": self.episode_id, "content_type": "video/mp4", "frames": self.frames}
        self.path.with_suffix(".meta.json").write_text(json.dumps(meta))
