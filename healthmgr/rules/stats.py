"""Listener statistics between two flushes, coalesced.

The manager adds every accepted heartbeat; at flush time it drains the
accumulator into the batch, and if the flush fails it merges the drained
updates back so nothing is lost.

- Absolute counters (native format, Octavia v1/v2): per (listener, amphora,
  counters epoch) only the highest ``seq`` is kept. An older ``seq`` of the
  same epoch says nothing the newer one does not (the store computes the delta
  from the last value it applied). Each epoch is kept separately: the store
  must see the last values of the old epoch before the restart.
- Delta counters (Octavia v3): per (listener, amphora) the deltas are summed;
  ``active_connections`` is a gauge, so the value of the highest ``seq`` is
  kept, as is its epoch. Deltas rely on the replay window upstream: a
  duplicated delta heartbeat would be counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from operator import attrgetter

from healthmgr.rules.batch import StatsUpdate
from healthmgr.wire.ids import Id
from healthmgr.wire.values import Heartbeat, ListenerReport

# C-level key: drain sorts one entry per listener and amphora every flush.
_sort_key = attrgetter("listener_id", "amphora_id", "seq")


def _sum(a: StatsUpdate, b: StatsUpdate) -> StatsUpdate:
    """Two delta updates of one (listener, amphora) as one."""
    newer = b if b.seq > a.seq else a
    return StatsUpdate(
        listener_id=a.listener_id,
        amphora_id=a.amphora_id,
        seq=newer.seq,
        epoch=newer.epoch,
        active_connections=newer.active_connections,
        bytes_in=a.bytes_in + b.bytes_in,
        bytes_out=a.bytes_out + b.bytes_out,
        total_connections=a.total_connections + b.total_connections,
        request_errors=a.request_errors + b.request_errors,
        is_delta=True,
    )


def _update(hb: Heartbeat, report: ListenerReport) -> StatsUpdate:
    return StatsUpdate(
        report.id,
        hb.amphora_id,
        hb.seq,
        hb.counters_epoch,
        report.current_connections,
        report.bytes_in,
        report.bytes_out,
        report.total_connections,
        report.request_errors,
        hb.counters_are_deltas,
    )


class StatsAccumulator:
    """Coalesces listener counters until the next flush. Pure, no I/O."""

    __slots__ = ("_absolute", "_deltas")

    def __init__(self) -> None:
        self._absolute: dict[tuple[Id, Id, int], StatsUpdate] = {}
        self._deltas: dict[tuple[Id, Id], StatsUpdate] = {}

    def __len__(self) -> int:
        """Number of updates the next drain returns."""
        return len(self._absolute) + len(self._deltas)

    def add(self, hb: Heartbeat) -> None:
        """Record the counters of every listener of one heartbeat."""
        if hb.counters_are_deltas:
            for report in hb.listeners:
                self._put(_update(hb, report))
            return
        # The hot path (native heartbeats): build the StatsUpdate only when it
        # replaces what is held, not for every heartbeat.
        absolute, amp, seq, epoch = self._absolute, hb.amphora_id, hb.seq, hb.counters_epoch
        for report in hb.listeners:
            key3 = (report.id, amp, epoch)
            old = absolute.get(key3)
            if old is None or seq > old.seq:
                absolute[key3] = _update(hb, report)

    def drain(self) -> tuple[StatsUpdate, ...]:
        """All pending updates ordered by (listener, amphora, seq); empties the accumulator."""
        out = sorted(chain(self._absolute.values(), self._deltas.values()), key=_sort_key)
        self._absolute.clear()
        self._deltas.clear()
        return tuple(out)

    def merge_back(self, updates: Iterable[StatsUpdate]) -> None:
        """Re-insert a drained batch whose flush failed.

        It coalesces with what arrived since, under the same rules as ``add``:
        an absolute update loses to a newer ``seq`` of its epoch, deltas add up.
        """
        for update in updates:
            self._put(update)

    def _put(self, update: StatsUpdate) -> None:
        if update.is_delta:
            key2 = (update.listener_id, update.amphora_id)
            old = self._deltas.get(key2)
            self._deltas[key2] = update if old is None else _sum(old, update)
            return
        key3 = (update.listener_id, update.amphora_id, update.epoch)
        old = self._absolute.get(key3)
        if old is None or update.seq > old.seq:
            self._absolute[key3] = update
