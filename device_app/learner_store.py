"""The learner's state across restarts: saved as it goes (``state_dir``/learner.json), restored as
a prior at start. What it was learnt under (broker, edges) is saved with it: learnt elsewhere, or
another device's (``initial_state``), it counts as a weaker prior."""

from __future__ import annotations

import logging
from pathlib import Path

from .learner.persist import StateError, load_state, save_state
from .learner.policy import Policy

log = logging.getLogger("ans.device")

#: What a restored learner state learnt under another broker or edge counts, relative to one
#: restored from the same (``resume_weight``).
FOREIGN_WEIGHT = 0.2
#: Edges remembered with the state at most.
MAX_EDGES = 64


class LearnerStore:
    """``write(path, save, *args)`` performs a save and survives its failure (a full disk)."""

    def __init__(self, policy: Policy, state_dir: str | None, broker: str, initial_state: str | None,
                 resume_weight: float, write):
        self.policy, self.broker, self.write = policy, broker, write
        self.path = Path(state_dir) / "learner.json" if state_dir and policy.stateful else None
        self.seen_edges: set[str] = set()  # edges that came online this run: saved with the state
        self.saved_edges: set[str] = set()  # the edges the restored state was learnt with (until checked)
        self._restore(Path(initial_state) if initial_state else None, resume_weight)

    def _restore(self, initial: Path | None, resume_weight: float) -> None:
        """Resume from the saved state as a prior (it counts ``resume_weight`` of fresh observations);
        learnt through another broker it counts ``FOREIGN_WEIGHT`` of that again, and so it does if
        the edge that comes online is none of those it was learnt with, or if it is another
        device's (``initial_state``, used while this device has no state of its own)."""
        path = self.path
        borrowed = path is None or not path.is_file()
        if borrowed:  # nothing of its own yet: another device's state, if the user gave one
            path = initial
            if path is None or not self.policy.stateful:
                return
        try:
            state = load_state(path)
            context = state.pop("context", None)
            self.policy.load_state(state, weight=resume_weight)
            log.info("resumed the learner from %s", path)
        except StateError as exc:
            log.warning("starting the learner afresh: %s", exc)
            return
        if borrowed:
            self._weaken(f"by another device ({path})")
            return
        if not isinstance(context, dict):
            return
        edges = context.get("edges")
        self.saved_edges = {e for e in edges if isinstance(e, str)} if isinstance(edges, list) else set()
        if context.get("broker") != self.broker:
            self.saved_edges = set()
            self._weaken(f"through another broker ({str(context.get('broker'))[:64]})")

    def _weaken(self, why: str) -> None:
        if self.policy.weaken(FOREIGN_WEIGHT):
            log.info("the restored learner state was learnt %s: kept as a weak prior", why)

    def edge_online(self, edge: str) -> None:
        if len(self.seen_edges) < MAX_EDGES:
            self.seen_edges.add(edge)

    def first_edges(self, edges: set[str]) -> None:
        """The edges online when one first came: a state learnt with none of them is a weaker prior
        (checked once)."""
        if self.saved_edges and not self.saved_edges & edges:
            self._weaken(f"with another edge ({', '.join(sorted(self.saved_edges))[:100]})")
        self.saved_edges = set()

    def save(self) -> None:
        if self.path is not None:
            context = {"broker": self.broker, "edges": sorted(self.seen_edges or self.saved_edges)}
            self.write(self.path, save_state, self.path, {**self.policy.state(), "context": context})
