"""The stats accumulator: coalescing, ordering, epochs, merge_back, deltas."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from healthmgr.rules.batch import StatsUpdate
from healthmgr.rules.stats import StatsAccumulator
from healthmgr.wire.ids import Id
from healthmgr.wire.values import Heartbeat, ListenerReport, ListenerState


def uid(name: str) -> Id:
    return name.encode().ljust(16, b"\0")


def hb(
    seq: int,
    amphora: str = "A1",
    listeners: tuple[str, ...] = ("L1",),
    epoch: int = 1,
    deltas: bool = False,
    value: int | None = None,
) -> Heartbeat:
    """A heartbeat whose counters are all ``value`` (default: ``seq``)."""
    v = seq if value is None else value
    reports = tuple(ListenerReport(uid(n), ListenerState.OPEN, v, v, v, v, v) for n in listeners)
    return Heartbeat(uid(amphora), seq, 0, 10_000, epoch, reports, (), counters_are_deltas=deltas)


def keys(updates) -> list[tuple[str, str, int, int]]:
    return [
        (u.listener_id.rstrip(b"\0").decode(), u.amphora_id.rstrip(b"\0").decode(), u.epoch, u.seq)
        for u in updates
    ]


def test_one_heartbeat_gives_one_update_per_listener():
    acc = StatsAccumulator()
    acc.add(
        Heartbeat(
            uid("A1"),
            7,
            0,
            10_000,
            3,
            (ListenerReport(uid("L1"), ListenerState.OPEN, 4, 100, 200, 50, 2),),
            (),
        )
    )
    assert len(acc) == 1
    assert acc.drain() == (StatsUpdate(uid("L1"), uid("A1"), 7, 3, 4, 100, 200, 50, 2, False),)


def test_absolute_counters_keep_only_the_highest_seq_per_epoch():
    acc = StatsAccumulator()
    for seq in (1, 3, 2):  # 2 arrives late: older than 3, dropped
        acc.add(hb(seq))
    (update,) = acc.drain()
    assert (update.seq, update.bytes_in) == (3, 3)


def test_a_duplicate_seq_does_not_replace():
    acc = StatsAccumulator()
    acc.add(hb(5, value=10))
    acc.add(hb(5, value=99))
    assert acc.drain()[0].bytes_in == 10


def test_epoch_change_within_one_interval_keeps_both_epochs():
    acc = StatsAccumulator()
    acc.add(hb(4, epoch=1))
    acc.add(hb(5, epoch=1))
    acc.add(hb(6, epoch=2, value=1))  # HAProxy restarted: counters from zero
    acc.add(hb(7, epoch=2, value=2))
    assert keys(acc.drain()) == [("L1", "A1", 1, 5), ("L1", "A1", 2, 7)]


def test_drain_orders_by_listener_amphora_seq_and_empties():
    acc = StatsAccumulator()
    acc.add(hb(9, "A2", ("L2", "L1")))
    acc.add(hb(3, "A1", ("L2",)))
    acc.add(hb(4, "A1", ("L1",), epoch=2))
    acc.add(hb(2, "A1", ("L1",), epoch=1))
    assert keys(acc.drain()) == [
        ("L1", "A1", 1, 2),
        ("L1", "A1", 2, 4),
        ("L1", "A2", 1, 9),
        ("L2", "A1", 1, 3),
        ("L2", "A2", 1, 9),
    ]
    assert len(acc) == 0
    assert acc.drain() == ()


def test_merge_back_without_news_restores_the_batch():
    acc = StatsAccumulator()
    acc.add(hb(1, listeners=("L1", "L2")))
    acc.add(hb(2, deltas=True, amphora="A2"))
    batch = acc.drain()
    acc.merge_back(batch)
    assert acc.drain() == batch


def test_merge_back_yields_to_newer_absolute_counters():
    acc = StatsAccumulator()
    acc.add(hb(3))
    failed = acc.drain()
    acc.add(hb(5))  # arrived while the flush was failing
    acc.merge_back(failed)
    assert keys(acc.drain()) == [("L1", "A1", 1, 5)]


def test_merge_back_keeps_an_older_epoch():
    acc = StatsAccumulator()
    acc.add(hb(3, epoch=1))
    failed = acc.drain()
    acc.add(hb(5, epoch=2))
    acc.merge_back(failed)
    assert keys(acc.drain()) == [("L1", "A1", 1, 3), ("L1", "A1", 2, 5)]


def test_deltas_are_summed_per_listener_and_amphora():
    acc = StatsAccumulator()
    acc.add(hb(1, deltas=True, value=10))
    acc.add(hb(3, deltas=True, value=5))
    acc.add(hb(2, deltas=True, value=1))  # late: still counted, its gauge is stale
    (u,) = acc.drain()
    assert u.is_delta
    assert (u.bytes_in, u.bytes_out, u.total_connections, u.request_errors) == (16, 16, 16, 16)
    assert (u.seq, u.active_connections) == (3, 5)  # the gauge of the newest heartbeat


def test_merge_back_of_deltas_loses_and_doubles_nothing():
    acc = StatsAccumulator()
    acc.add(hb(1, deltas=True, value=10))
    failed = acc.drain()
    acc.add(hb(2, deltas=True, value=7))
    acc.merge_back(failed)
    (u,) = acc.drain()
    assert (u.bytes_in, u.seq, u.active_connections) == (17, 2, 7)


def test_absolute_and_delta_updates_of_one_listener_are_kept_apart():
    acc = StatsAccumulator()
    acc.add(hb(1))
    acc.add(hb(2, deltas=True))
    assert [u.is_delta for u in acc.drain()] == [False, True]


# --- property: whatever the drains and failed flushes, nothing is lost --------

events = st.lists(
    st.one_of(
        st.tuples(
            st.just("hb"),
            st.sampled_from(["A1", "A2"]),
            st.sampled_from([("L1",), ("L2",), ("L1", "L2")]),
            st.integers(1, 3),  # epoch
            st.booleans(),  # deltas
            st.integers(0, 1000),  # value
        ),
        st.sampled_from([("flush-ok",), ("flush-failed",)]),
    ),
    max_size=40,
)


@given(events)
def test_drains_and_merge_backs_lose_nothing(script):
    acc = StatsAccumulator()
    written: list[StatsUpdate] = []
    sent: list[Heartbeat] = []
    for seq, event in enumerate(script, start=1):
        if event[0] == "hb":
            _, amp, listeners, epoch, deltas, value = event
            sent.append(hb(seq, amp, listeners, epoch, deltas, value))
            acc.add(sent[-1])
        elif event[0] == "flush-ok":
            written.extend(acc.drain())
        else:
            acc.merge_back(acc.drain())
    written.extend(acc.drain())

    # Absolute: for every (listener, amphora, epoch) the newest heartbeat was written.
    newest: dict[tuple, int] = {}
    delta_sum: dict[tuple, int] = {}
    for h in sent:
        for r in h.listeners:
            if h.counters_are_deltas:
                key = (r.id, h.amphora_id)
                delta_sum[key] = delta_sum.get(key, 0) + r.bytes_in
            else:
                key = (r.id, h.amphora_id, h.counters_epoch)
                newest[key] = max(newest.get(key, 0), h.seq)
    for key, seq in newest.items():
        assert seq in {u.seq for u in written if (u.listener_id, u.amphora_id, u.epoch) == key}
    got: dict[tuple, int] = {}
    for u in written:
        if u.is_delta:
            got[(u.listener_id, u.amphora_id)] = (
                got.get((u.listener_id, u.amphora_id), 0) + u.bytes_in
            )
    assert got == delta_sum
