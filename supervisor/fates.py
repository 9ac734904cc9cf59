"""What became of ids no longer in use (closed, or dead and forgotten), for the unknown-id error."""

import time
from collections import OrderedDict

REMEMBERED = 10_000  # ids whose fate is told; past it the oldest are forgotten for good


class Fates:
    """Owns the fates of the last REMEMBERED ids closed or forgotten, each with its time and
    owner (told only to them: another user's id must read as one never made)."""

    def __init__(self) -> None:
        self._fates: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def remember(self, instance_id: str, fate: str, owner: str = "") -> None:
        self._fates[instance_id] = owner, f"{fate} at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"
        self._fates.move_to_end(instance_id)
        while len(self._fates) > REMEMBERED:
            self._fates.popitem(last=False)

    def get(self, instance_id: str, owner: str | None = None) -> str | None:
        """The fate of an id, as `owner` may be told it (None: anyone)."""
        owned, fate = self._fates.get(instance_id, ("", None))
        return fate if owner is None or owner == owned else None

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._fates
