"""The callback inbox: a 2xx means the callback is on disk in the inbox; the normaliser applies
each callback once, in order, across restarts, in this process or in a process of its own."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sqlite3
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from gateway import ingest, normaliser_process
from gateway.carriers.base import Callback, Concat, InboundSms
from gateway.carriers.sandbox import SIGNATURE_HEADER, InboundEvent, signed_callback
from gateway.clock import format_time
from gateway.config import Config, DatabaseConfig
from gateway.models import Customer
from gateway.normaliser import encode_callback
from gateway.store import Store
from gateway.store.inbox import Inbox, inbox_path
from tests.conftest import SANDBOX_SECRET, GatewayServer, ServerFactory, eventually, free_socket
from tests.test_api_messages import assert_error
from tests.test_crash import cli, ready, serving, write_config
from tests.test_operations import metric_value
from tests.test_sandbox_flow import all_messages

SENDER = "+15557770000"


def signed_inbound(to: str, event_id: str, text: str = "hi") -> tuple[bytes, dict[str, str]]:
    event = InboundEvent(id=event_id, from_=SENDER, to=to, text=text)
    body, signature = signed_callback(SANDBOX_SECRET, event, time.time())
    return body, {SIGNATURE_HEADER: signature, "content-type": "application/json"}


async def post_unsettled(server: GatewayServer, to: str, event_id: str, text: str = "hi") -> int:
    """Post a callback without waiting for it to be normalised (unlike `server.client`)."""
    body, headers = signed_inbound(to, event_id, text)
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/hooks/sandbox", content=body, headers=headers)
    return response.status_code


def inbox_rows(db_path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(inbox_path(db_path)) as db:
        return db.execute("SELECT id, carrier FROM inbox ORDER BY id").fetchall()


def applied_through(db_path: Path) -> int:
    with sqlite3.connect(db_path) as db:
        [(applied,)] = db.execute("SELECT applied_through FROM inbox_cursor").fetchall()
    return int(applied)


def customer() -> Customer:
    return Customer(str(uuid.uuid4()), "c", "", "POST", "whsec_x", "2026-11-27T00:00:00Z")


def remove_inbox(db_path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{inbox_path(db_path)}{suffix}").unlink(missing_ok=True)


def test_the_inbox_lives_beside_the_database() -> None:
    assert inbox_path("var/gateway.db") == Path("var/gateway.inbox.db")
    assert inbox_path("/data/gw") == Path("/data/gw.inbox.db")


async def test_a_2xx_callback_is_in_the_inbox_then_normalised_once_and_deleted(
    start_gateway: ServerFactory, tmp_path: Path
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    assert await post_unsettled(server, tenant.number, "in-1", "first") == 200
    assert await post_unsettled(server, tenant.number, "in-2", "second") == 200
    db = tmp_path / "gateway.db"
    assert [carrier for _, carrier in inbox_rows(db)] == ["sandbox", "sandbox"]
    assert await all_messages(server, tenant.id) == []  # answered, not yet normalised
    waiting = (await server.client.get("/metrics")).text
    assert metric_value(waiting, "gateway_backlog", kind="callbacks_waiting") == 2

    await server.settled()
    messages = await all_messages(server, tenant.id)
    assert sorted(m.text for m in messages) == ["first", "second"]
    assert applied_through(db) == inbox_rows(db)[-1][0]
    await server.settled()  # nothing left: nothing applied twice
    assert len(await all_messages(server, tenant.id)) == 2

    await server.gateway.callbacks.tidy()
    assert inbox_rows(db) == []
    metrics = (await server.client.get("/metrics")).text
    applied = metric_value(metrics, "gateway_callbacks_total", carrier="sandbox", outcome="applied")
    assert applied == 2
    assert metric_value(metrics, "gateway_backlog", kind="callbacks_waiting") == 0


async def test_callbacks_left_in_the_inbox_are_applied_after_a_restart_exactly_once(
    start_gateway: ServerFactory, tmp_path: Path
) -> None:
    first = await start_gateway(run_workers=False)
    tenant = await first.add_tenant("+15550000001")
    for i in range(5):
        assert await post_unsettled(first, tenant.number, f"in-{i}", f"text {i}") == 200
    await first.stop()  # stopped with all five waiting

    second = await start_gateway()  # its workers run: the normaliser applies them

    async def five() -> bool:
        return len(await all_messages(second, tenant.id)) == 5

    await eventually(five)
    await second.stop()
    third = await start_gateway()
    await asyncio.sleep(0.2)  # its normaliser has looked
    assert sorted(m.text for m in await all_messages(third, tenant.id)) == [
        f"text {i}" for i in range(5)
    ]
    # Not even looked at again: a replay would show as duplicates (dedup hides it otherwise).
    metrics = (await third.client.get("/metrics")).text
    assert (
        metric_value(metrics, "gateway_callbacks_total", carrier="sandbox", outcome="duplicate")
        is None
    )
    assert applied_through(tmp_path / "gateway.db") == 5  # the five inbox ids, 1 to 5


async def test_callbacks_are_applied_in_the_order_they_were_answered(
    start_gateway: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "TIDY_CHUNK", 7)  # tidied in many small deletes
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    for i in range(100):  # more than one normaliser batch
        assert await post_unsettled(server, tenant.number, f"in-{i}", f"{i:03d}") == 200
    await server.settled()
    async with server.gateway.store.reading() as tx:
        rows = await tx.all("SELECT text FROM messages ORDER BY rowid")
    assert [row["text"] for row in rows] == [f"{i:03d}" for i in range(100)]
    await server.gateway.callbacks.tidy()
    assert inbox_rows(tmp_path / "gateway.db") == []


async def test_an_entry_that_cannot_be_read_is_logged_kept_and_skipped(
    start_gateway: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    good = Callback("good-1", InboundSms("c1", SENDER, tenant.number, "before"))
    later = Callback("good-2", InboundSms("c2", SENDER, tenant.number, "after"))
    now = "2026-11-27T00:00:00.000000Z"
    await server.gateway.inbox.append([
        ("sandbox", now, encode_callback(good)),
        ("sandbox", now, b'{"not": "a callback"}'),  # e.g. written by a newer version
        ("sandbox", now, encode_callback(later)),
    ])  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="gateway.normaliser"):
        await server.settled()
    assert sorted(m.text for m in await all_messages(server, tenant.id)) == ["after", "before"]
    assert "could not be applied; kept in failed_callbacks" in caplog.text
    assert applied_through(tmp_path / "gateway.db") == inbox_rows(tmp_path / "gateway.db")[-1][0]
    metrics = (await server.client.get("/metrics")).text
    assert (
        metric_value(metrics, "gateway_callbacks_total", carrier="sandbox", outcome="failed") == 1
    )


async def test_a_lost_inbox_file_does_not_make_new_callbacks_look_applied(
    start_gateway: ServerFactory, tmp_path: Path
) -> None:
    first = await start_gateway(run_workers=False)
    tenant = await first.add_tenant("+15550000001")
    for i in range(3):
        assert await post_unsettled(first, tenant.number, f"in-{i}") == 200
    await first.settled()
    await first.stop()
    remove_inbox(tmp_path / "gateway.db")

    second = await start_gateway(run_workers=False)
    assert await post_unsettled(second, tenant.number, "in-after", "after the loss") == 200
    await second.settled()
    assert "after the loss" in {m.text for m in await all_messages(second, tenant.id)}


async def test_one_append_of_many_rows_keeps_every_row_in_its_order(tmp_path: Path) -> None:
    # 511 = 256 + 128 + ... + 1: every statement size the append writes with.
    inbox = await Inbox.open(tmp_path / "gateway.inbox.db")
    try:
        rows = [
            (f"carrier-{i}", f"2026-01-01 00:00:{i % 60:02d}.000000", b"%d" % i) for i in range(511)
        ]
        await inbox.append(rows)
        await inbox.append(rows[:2])
        stored = await inbox.after(0, 1000)
    finally:
        await inbox.close()
    assert [(e.carrier, e.received_at, e.callback) for e in stored] == rows + rows[:2]
    assert [e.id for e in stored] == list(range(1, 514))


async def test_callbacks_are_refused_503_while_too_many_wait(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False, ingest={"max_backlog": 2})
    tenant = await server.add_tenant("+15550000001")
    assert await post_unsettled(server, tenant.number, "in-1") == 200
    assert await post_unsettled(server, tenant.number, "in-2") == 200
    body, headers = signed_inbound(tenant.number, "in-3")
    async with httpx.AsyncClient(base_url=server.url) as client:
        refused = await client.post("/hooks/sandbox", content=body, headers=headers)
    assert_error(refused, 503, "UNAVAILABLE", "INBOX_FULL")
    await server.settled()
    await server.gateway.callbacks.tidy()
    assert await post_unsettled(server, tenant.number, "in-3") == 200  # the carrier's retry


async def test_callbacks_are_taken_while_the_main_database_is_unavailable(
    start_gateway: ServerFactory, tmp_path: Path
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    await server.gateway.store.close()
    assert await post_unsettled(server, tenant.number, "in-1", "kept") == 200
    assert len(inbox_rows(tmp_path / "gateway.db")) == 1
    await server.stop()
    restarted = await start_gateway()

    async def applied() -> bool:
        return [m.text for m in await all_messages(restarted, tenant.id)] == ["kept"]

    await eventually(applied)


# The normaliser's own process, as `gateway serve` runs it --------------------------------------


def normaliser_pids(server_pid: int) -> list[int]:
    """The server's children running the normaliser (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == server_pid and b"gateway.normaliser_process" in argv:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
async def test_serve_normalises_in_a_second_process_and_restarts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    config = write_config(tmp_path, port, retry_s=0.3)
    # The sandbox secret comes from the environment, as in production: the child gets it too.
    text = config.read_text().replace(f'secret = "{SANDBOX_SECRET}"', 'secret = "env:SBX_SECRET"')
    assert "env:SBX_SECRET" in text
    config.write_text(text)
    monkeypatch.setenv("SBX_SECRET", SANDBOX_SECRET)
    customer = await cli(config, "customers", "create", "--name", "c")
    customer_id = customer.split('"id":"')[1].split('"')[0]
    await cli(config, "numbers", "add", "--customer", customer_id, "--number", "+15550000001",
              "--carrier", "sandbox")  # fmt: skip
    db = tmp_path / "crash.db"
    base = f"http://127.0.0.1:{port}"

    async def post(event_id: str, text: str) -> int:
        body, headers = signed_inbound("+15550000001", event_id, text)
        async with httpx.AsyncClient(base_url=base) as client:
            return (await client.post("/hooks/sandbox", content=body, headers=headers)).status_code

    def texts() -> list[str]:
        with sqlite3.connect(db) as conn:
            return sorted(row[0] for row in conn.execute("SELECT text FROM messages"))

    async with serving(config, port) as process:
        [child] = normaliser_pids(process.pid)
        assert child != process.pid
        assert await post("in-1", "one") == 200

        async def one() -> bool:
            return texts() == ["one"]

        await eventually(one)
        assert os.getpriority(os.PRIO_PROCESS, child) == 19  # the server comes first
        assert os.sched_getscheduler(child) == os.SCHED_OTHER
        async with httpx.AsyncClient(base_url=base) as client:
            metrics = (await client.get("/metrics")).text
        applied = metric_value(
            metrics, "gateway_callbacks_total", carrier="sandbox", outcome="applied"
        )
        assert applied == 1  # reported by the child, counted by the server

        os.kill(child, signal.SIGKILL)  # the normaliser dies: callbacks are still taken
        async with httpx.AsyncClient(base_url=base) as client:

            async def not_ready() -> bool:
                return (await client.get("/readyz")).status_code == 503

            await eventually(not_ready)
        assert await post("in-2", "two") == 200
        await eventually(lambda: ready(port))  # restarted

        async def two() -> bool:
            return texts() == ["one", "two"]

        await eventually(two)
        [restarted] = normaliser_pids(process.pid)
        assert restarted != child

        process.send_signal(signal.SIGKILL)  # the server dies: its normaliser goes with it
        await process.wait()

        async def gone() -> bool:
            return _state(restarted) in (b"Z", b"X")

        await eventually(gone)


def _state(pid: int) -> bytes:
    """The process's state letter; X (dead) once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return b"X"


# Found in review --------------------------------------------------------------------------------


async def test_an_entry_the_database_refuses_is_kept_and_the_ones_behind_it_go_on(
    start_gateway: ServerFactory, tmp_path: Path
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    now = "2026-11-27T00:00:00.000000Z"
    # e.g. an authentic Twilio inbound with NumSegments >= 2**63: SQLite refuses the integer.
    refused = Callback("bad", InboundSms("c0", SENDER, tenant.number, "x", parts=2**63))
    later = Callback("good", InboundSms("c1", SENDER, tenant.number, "after"))
    await server.gateway.inbox.append(
        [("sandbox", now, encode_callback(refused)), ("sandbox", now, encode_callback(later))]
    )
    await server.settled()
    assert [m.text for m in await all_messages(server, tenant.id)] == ["after"]
    db = tmp_path / "gateway.db"
    assert applied_through(db) == inbox_rows(db)[-1][0]
    with sqlite3.connect(db) as conn:
        [(inbox_id, error, callback)] = conn.execute(
            "SELECT inbox_id, error, callback FROM failed_callbacks"
        ).fetchall()
    assert inbox_id == inbox_rows(db)[0][0]
    assert "StoreError" in error
    assert callback == encode_callback(refused)  # kept whole, for the operator


async def test_a_lagging_normaliser_does_not_split_a_concatenated_sms(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False, inbound={"reassembly_wait_s": 60})
    tenant = await server.add_tenant("+15550000001")
    answered = server.gateway.clock.now() - timedelta(seconds=90)  # waited 90 s in the inbox

    def part(n: int, text: str) -> bytes:
        sms = InboundSms(f"m{n}", SENDER, tenant.number, text, concat=Concat("r", 2, n))
        return encode_callback(Callback(f"p{n}", sms))

    await server.gateway.inbox.append([("sandbox", format_time(answered), part(1, "Hello, "))])
    await server.settled()
    await server.gateway.tracker.flush_inbound()  # the reassembly timer, between two batches
    later = format_time(answered + timedelta(seconds=1))
    await server.gateway.inbox.append([("sandbox", later, part(2, "world"))])
    await server.settled()
    assert [m.text for m in await all_messages(server, tenant.id)] == ["Hello, world"]


async def test_a_second_cancel_while_waiting_to_write_leaves_no_lock_held(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    holder, victim, other = [await Store.open(db) for _ in range(3)]
    release = asyncio.Event()

    async def hold() -> None:
        async with holder.transaction():
            await release.wait()

    async def write() -> None:
        async with victim.transaction() as tx:
            await tx.execute("UPDATE inbox_cursor SET applied_through = 1")

    holding = asyncio.create_task(hold())
    await asyncio.sleep(0.1)
    writing = asyncio.create_task(write())
    await asyncio.sleep(0.1)  # its BEGIN waits in the database thread for the writer lock
    writing.cancel()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    writing.cancel()  # again, as a shutdown cancelling a request already being cancelled
    release.set()
    await holding
    with pytest.raises(asyncio.CancelledError):
        await writing
    try:
        # Another writer gets in: nothing was left holding the lock.
        await asyncio.wait_for(other.create_customer(customer()), 3)
    finally:
        for store in (holder, victim, other):
            await store.close()


async def test_a_normaliser_that_cannot_be_started_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = asyncio.create_subprocess_exec
    calls = 0

    async def fails_once(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BlockingIOError(11, "Resource temporarily unavailable")  # fork: EAGAIN
        return await real(*args, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", fails_once)
    monkeypatch.setattr(normaliser_process, "RESTART_DELAY_S", 0.05)
    config = Config(database=DatabaseConfig(path=str(tmp_path / "gateway.db")))
    child = normaliser_process.NormaliserProcess(config, lambda report: None)
    child.start()
    try:

        async def running() -> bool:
            return child.running

        await eventually(running)
        assert calls == 2
    finally:
        await child.close()
    assert not child.running


async def test_a_child_that_cannot_open_its_files_exits(tmp_path: Path) -> None:
    (tmp_path / "gateway.inbox.db").write_bytes(b"not a database" * 100)
    config = Config(database=DatabaseConfig(path=str(tmp_path / "gateway.db")))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.normaliser_process", str(theirs.fileno()),
        stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        pass_fds=(theirs.fileno(),),
    )  # fmt: skip
    theirs.close()
    try:
        _, stderr = await asyncio.wait_for(process.communicate(msgspec.json.encode(config)), 20)
    finally:
        ours.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 1
    assert b"normaliser process failed" in stderr


@pytest.fixture
def no_seqpacket(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A system without SOCK_SEQPACKET Unix sockets (macOS)."""

    real = socket.socketpair

    def socketpair(*args: Any) -> tuple[socket.socket, socket.socket]:
        if socket.SOCK_SEQPACKET in args:
            raise OSError(93, "Protocol not supported")
        return real(*args)

    normaliser_process._seqpacket_sockets.cache_clear()
    monkeypatch.setattr(socket, "socketpair", socketpair)
    yield
    normaliser_process._seqpacket_sockets.cache_clear()


@pytest.mark.usefixtures("no_seqpacket")
async def test_without_seqpacket_sockets_the_normaliser_runs_in_the_server(
    start_gateway: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.normaliser_process"):
        server = await start_gateway(ingest={"normaliser_process": True})
    assert server.gateway.normaliser_process is None
    assert "normaliser runs in the server's process" in caplog.text
    tenant = await server.add_tenant("+15550000001")
    event = InboundEvent(id=f"sbx_in_{uuid.uuid4().hex}", from_="+15557770000", to=tenant.number)
    body, signature = signed_callback(SANDBOX_SECRET, event, time.time())
    # A plain client: nothing drains for it, the server's own normaliser task must.
    async with httpx.AsyncClient(base_url=server.url) as client:
        answer = await client.post(
            "/hooks/sandbox",
            content=body,
            headers={SIGNATURE_HEADER: signature, "content-type": "application/json"},
        )
    assert answer.status_code == 200, answer.text

    async def normalised() -> bool:
        return len(await all_messages(server, tenant.id)) == 1

    await eventually(normalised)
    ready_now = await server.client.get("/readyz")
    assert ready_now.status_code == 200, ready_now.text


PRIORITY_PROBE = """
import os, sys
from gateway.normaliser_process import lower_priority
lower_priority(sys.argv[1])
print(os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))
"""


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux's scheduling classes")
@pytest.mark.parametrize(
    ("priority", "scheduler", "niceness"),
    [("low", "SCHED_OTHER", 19), ("idle", "SCHED_IDLE", 0), ("normal", "SCHED_OTHER", 0)],
)
async def test_each_normaliser_priority_sets_its_scheduling(
    priority: str, scheduler: str, niceness: int
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PRIORITY_PROBE, priority, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0
    base = os.getpriority(os.PRIO_PROCESS, 0)  # a child starts at its parent's niceness
    expected = (getattr(os, scheduler), niceness if niceness else base)
    assert tuple(int(x) for x in stdout.split()) == expected
