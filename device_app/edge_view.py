"""What the frame thread knows of the broker and the edges, from the link's events alone."""

from __future__ import annotations

import numpy as np

from common.logs import RateLimitedLog

from .link import Connected, EdgeLoad, EdgeStatus, EdgeTable, Lost, OwnStats


class EdgeView:
    """``on_edge(name)``: an edge came online (the learner store remembers it); ``count(name)``: the
    stats' counters."""

    def __init__(self, device_id: str, bundle_hash: str, instance: str, logs: RateLimitedLog, count, on_edge):
        self.device_id, self.bundle_hash, self.instance = device_id, bundle_hash, instance
        self.logs, self.count, self.on_edge = logs, count, on_edge
        self.online = False  # the broker session is up
        self.edges: set[str] = set()
        # Bumped whenever an edge leaves (or the broker does): a request in flight then is not a
        # measure of offloading, and must not be taught to the learner as a slow answer.
        self.epoch = 0
        self.edge_back = False  # an edge came online with none before: the learner re-checks offloading
        self.loads: dict = {}  # edge -> its latest load report, not yet given to the learner
        self.table: np.ndarray | None = None  # an edge's compute table not yet given to the learner
        self.twin: str | None = None  # another process with this device's id, in the current stats window

    def take(self, event) -> None:
        if isinstance(event, EdgeStatus):
            if event.online:
                self.edge_back = self.edge_back or not self.edges
                self.edges.add(event.edge)
                self.on_edge(event.edge)
            elif event.edge in self.edges:
                self.edges.discard(event.edge)
                self.epoch += 1
        elif isinstance(event, EdgeLoad):
            if event.edge in self.edges:  # the latest per online edge, for the learner
                self.loads[event.edge] = event.report
        elif isinstance(event, EdgeTable):
            self._compute_table(event.table)
        elif isinstance(event, OwnStats):
            self._check_twin(event.instance)
        elif isinstance(event, Connected):
            self.online = True
        elif isinstance(event, Lost):
            # Until the broker is back no edge can answer: finish frames here instead of waiting out deadlines.
            self.online = False
            self.edges.clear()
            self.epoch += 1

    def refused(self, edge: str) -> None:
        """The edge serves another model: no split will do until it comes online again (redeployed)."""
        self.edges.discard(edge)

    def _compute_table(self, table) -> None:
        """An edge's compute table: kept for the learner if it is for this bundle."""
        if table.bundle != self.bundle_hash:
            self.logs.warning("compute-table", "ignoring the compute table of edge %r: it is for bundle %s, this "
                              "device runs %s", table.edge[:64], table.bundle[:12], self.bundle_hash[:12])
            return
        self.table = np.array([np.nan if v is None else v for v in table.compute_s])  # NaN: not measured

    def _check_twin(self, instance: str | None) -> None:
        """Stats on this device's own topic from another instance: two devices share one id. They would
        mix up each other's results and status (a silent tug of war): said loudly, counted, and shown
        in the stats (``duplicate_id``) until it stops."""
        if instance == self.instance:
            return
        self.twin = str(instance)
        self.count("duplicate_id")
        self.logs.error("duplicate-id", "another device is running with id %r on this broker (instance %s, this one is "
                        "%s): results and status are mixed up between them; give each device its own id",
                        self.device_id, self.twin, self.instance)
