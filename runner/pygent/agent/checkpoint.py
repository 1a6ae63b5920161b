"""An agent at one point: its conversation, its step count and its sandbox's snapshot.

Why a value: tree search and best-of-n try several continuations from one point
(`Agent.fork(cp, n)`), backtracking rewinds a bad step (`Agent.restore(cp)`);
both need the conversation and the files (and the shell's variables and cwd)
to go back together. The model is not part of it: the Model protocol and the
seed API are unchanged, a forked agent calls the same model object.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..sandbox.snapshot import Snapshot


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What Agent.checkpoint() returns. `snapshot` is None when the agent had not started a
    sandbox yet (its continuation then starts a fresh one, which is the same thing)."""

    history: tuple[dict[str, Any], ...]
    steps: int
    snapshot: "Snapshot | None"

    def messages(self) -> list[dict[str, Any]]:
        """A deep copy of the conversation, for an agent to continue from."""
        return copy.deepcopy(list(self.history))
