"""The stats socket parsers (captured text) and the client against a real HAProxy."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from agent import haproxy
from agent.haproxy import HAProxyError, RowType
from tests.agent.agent_testlib import LoadBalancer, stop

CAPTURED = (Path(__file__).parent / "data" / "show_info_stat.txt").read_text()
LISTENER = "11111111-1111-1111-1111-111111111111"
POOL = "22222222-2222-2222-2222-222222222222:" + LISTENER


def test_parse_snapshot_captured() -> None:
    snap = haproxy.parse_snapshot(CAPTURED)
    assert snap.info.pid == 9509
    assert snap.info.start_time_sec == 1795824303
    assert snap.info.uptime_sec == 29
    assert snap.info.fields["Version"] == "2.6.12-1+deb12u4"
    by_name = {(r.pxname, r.svname): r for r in snap.rows}
    front = by_name[(LISTENER, "FRONTEND")]
    assert front.type is RowType.FRONTEND
    assert (front.status, front.scur, front.bin, front.bout, front.stot, front.ereq) == (
        "OPEN",
        2,
        4321,
        98765,
        17,
        1,
    )
    assert front.weight is None
    backend = by_name[(POOL, "BACKEND")]
    assert backend.type is RowType.BACKEND and backend.status == "UP"
    down = by_name[(POOL, "44444444-4444-4444-4444-444444444444")]
    assert down.type is RowType.SERVER
    assert (down.status, down.weight) == ("DOWN 1/2", 1)
    assert by_name[(POOL, "55555555-5555-5555-5555-555555555555")].status == "no check"
    assert by_name[(POOL, "66666666-6666-6666-6666-666666666666")].weight == 0
    assert len(snap.rows) == 7


def test_parse_info_requires_pid() -> None:
    with pytest.raises(HAProxyError, match="Pid"):
        haproxy.parse_info("Name: HAProxy\nVersion: 2.6\n")


def test_parse_info_without_start_time() -> None:
    info = haproxy.parse_info("Pid: 12\nUptime_sec: 40\n")
    assert (info.pid, info.start_time_sec, info.uptime_sec) == (12, None, 40)


def test_parse_stat_errors() -> None:
    with pytest.raises(HAProxyError, match="header"):
        haproxy.parse_stat("pxname,svname\nfoo,bar\n")
    with pytest.raises(HAProxyError, match="'type'"):
        haproxy.parse_stat("# pxname,svname,status\nfoo,FRONTEND,OPEN\n")
    with pytest.raises(HAProxyError, match="scur"):
        haproxy.parse_stat("# pxname,svname,type,status,scur\nfoo,FRONTEND,0,OPEN,many\n")
    with pytest.raises(HAProxyError, match="unknown row type '7'"):
        haproxy.parse_stat("# pxname,svname,type,status\nfoo,FRONTEND,7,OPEN\n")
    with pytest.raises(HAProxyError, match="short line 'foo'"):
        haproxy.parse_stat("# pxname,svname,type,status\nfoo\n")


def test_parse_stat_absent_and_missing_columns() -> None:
    # Columns the header lacks, or a line cuts short, read as empty.
    (row,) = haproxy.parse_stat("# pxname,svname,status,type,scur\nfoo,FRONTEND,OPEN,0\n")
    assert (row.type, row.status, row.weight, row.scur, row.bin) == (
        RowType.FRONTEND, "OPEN", None, 0, 0
    )  # fmt: skip
    assert row.fields == {"pxname": "foo", "svname": "FRONTEND", "status": "OPEN", "type": "0"}


def test_parse_snapshot_rejects_error_text() -> None:
    with pytest.raises(HAProxyError, match="Permission denied"):
        haproxy.parse_snapshot("Permission denied\n\n")
    with pytest.raises(HAProxyError, match="empty answer"):
        haproxy.parse_snapshot("")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/run/haproxy/stats.sock", haproxy.Address(path="/run/haproxy/stats.sock")),
        ("unix:stats.sock", haproxy.Address(path="stats.sock")),
        ("127.0.0.1:9000", haproxy.Address(host="127.0.0.1", port=9000)),
        ("[::1]:9000", haproxy.Address(host="::1", port=9000)),
    ],
)
def test_parse_address(text: str, expected: haproxy.Address) -> None:
    assert haproxy.parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "stats.sock", "127.0.0.1:", "host:99999", ":80"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="stats socket"):
        haproxy.parse_address(text)


async def test_query_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(HAProxyError, match=r"nope\.sock"):
        await haproxy.query(str(tmp_path / "nope.sock"))


async def test_query_times_out(tmp_path: Path) -> None:
    # A listener that accepts but never answers: the client gives up cleanly.
    listener = trio.socket.socket(trio.socket.AF_UNIX)
    await listener.bind(str(tmp_path / "mute.sock"))
    listener.listen(1)
    with listener, pytest.raises(HAProxyError, match="no complete answer"):
        await haproxy.query(str(tmp_path / "mute.sock"), timeout=0.2)


async def _wait_member_status(lb: LoadBalancer, member: str, status: str) -> haproxy.StatRow:
    deadline = time.monotonic() + 10
    while True:
        snap = await haproxy.query(str(lb.socket_path))
        row = next(r for r in snap.rows if r.svname == member)
        if row.status == status or time.monotonic() > deadline:
            return row
        await trio.sleep(0.1)


@pytest.mark.haproxy
async def test_real_haproxy(haproxy_lb: LoadBalancer) -> None:
    lb = haproxy_lb
    m1, m2 = lb.member_ids
    # A check can fail transiently while a web server warms up ("UP 1/2"): wait for UP.
    for member in (m1, m2):
        assert (await _wait_member_status(lb, member, "UP")).status == "UP"

    # Traffic through the listener shows up in the frontend's absolute counters.
    for _ in range(3):
        stream = await trio.open_tcp_stream("127.0.0.1", lb.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.0\r\n\r\n")
            while await stream.receive_some(65536):
                pass
    snap = await haproxy.query(str(lb.socket_path))
    assert snap.info.pid == lb.haproxy.pid
    assert snap.info.start_time_sec is not None
    front = next(r for r in snap.rows if r.pxname == lb.listener_id)
    assert front.type is RowType.FRONTEND and front.status == "OPEN"
    assert front.stot >= 3 and front.bin > 0 and front.bout > 0
    backend = next(r for r in snap.rows if r.type is RowType.BACKEND and r.pxname != "stats")
    assert backend.pxname == f"{lb.pool_id}:{lb.listener_id}"
    assert backend.status == "UP"

    # Kill web-2: its server goes DOWN (fall 2 at inter 200ms), web-1 stays UP.
    stop(lb.webs[1])
    assert (await _wait_member_status(lb, m2, "DOWN")).status == "DOWN"
    snap = await haproxy.query(f"unix:{lb.socket_path}")
    assert next(r for r in snap.rows if r.svname == m1).status == "UP"
