"""The normaliser in a process of its own, so that turning callbacks into messages runs on a
second core while the server's process only verifies, commits and answers.

The server starts it (`NormaliserProcess`), restarts it if it dies, and talks to it over a
socket pair: the server sends a byte whenever callbacks are committed to the inbox; the child
sends back a `Report` after each batch it applies (the outcomes, for the metrics; applied ones
wake the server's webhook worker). The child exits when the socket closes, so it never
outlives the server. It gets the config, secrets included, on stdin rather than in argv.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

import msgspec
import uvloop

from gateway import logs
from gateway.clock import SystemClock
from gateway.config import Config
from gateway.errors import StoreError
from gateway.gc_tuning import tune_for_serving
from gateway.normaliser import POLL_INTERVAL_S, Normaliser, Outcomes
from gateway.store import Store
from gateway.store.inbox import Inbox, inbox_path
from gateway.store.sqlite import Checkpointer
from gateway.tracking import Tracker
from gateway.workers import Wakeup, run_forever

log = logging.getLogger(__name__)

# `[ingest] normaliser_priority`. Under load the server's process should come first: carriers
# wait on it, while the normaliser only falls behind (durably) for a while. "low" (the default)
# is niceness 19: about 1.5 % of a nice-0 process's share of a contended core. "idle"
# (SCHED_IDLE) runs it only on a core nothing else wants, which sounds better and measured
# worse. Most likely the server's commits sometimes wait on the normaliser (an ext4 journal
# commit waits for every write in progress, the normaliser's too), and an idle-class process
# preempted in the middle of one waits for a free core. Paced at 3,700 callbacks/s, six
# alternating runs each: p99 7.4-13.1 ms (median 10.2) at "low", 11.1-32.9 (median 13.1) at
# "idle" (bench/RESULTS.md). With a core to itself it runs at full speed either way.
NICENESS = 19
RESTART_DELAY_S = 1.0
STOP_TIMEOUT_S = 10.0
# The inbox's checkpoints run here, beside the server's appends, not in its commits: measured
# at about 4,500 callbacks/s, the median p99 of nine runs went from 11.8 to 9.3 ms.
CHECKPOINT_INTERVAL_S = 0.25
# The main database's checkpoints run here too, from a connection of their own, so that no
# commit holds the write lock through a checkpoint's disk flush, and each flush stays small (the
# inbox's commits queue behind it on the same disk). Paced at 1,400 callbacks/s on a slow day,
# alternating: p99 26-32 ms with checkpoints in the commits at SQLite's 1,000 pages, 16-21 ms
# with these every 20 ms; end to end at 200/s no worse (bench/RESULTS.md).
DATABASE_CHECKPOINT_INTERVAL_S = 0.02
_WAKE = b"w"


class Report(msgspec.Struct, frozen=True):
    outcomes: list[tuple[str, str, int]]  # carrier, outcome, how many


_report_encoder = msgspec.json.Encoder()
_report_decoder = msgspec.json.Decoder(Report)


# The server's side ---------------------------------------------------------------------------


def runs_apart(config: Config) -> bool:
    """Whether the normaliser gets a process of its own: as configured, where the system has
    the socket it needs (Linux has; macOS has no SOCK_SEQPACKET for Unix sockets). Elsewhere it
    runs in the server's process, as with `[ingest] normaliser_process = false`."""
    return config.ingest.normaliser_process and _seqpacket_sockets()


@functools.cache
def _seqpacket_sockets() -> bool:
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except (AttributeError, OSError) as exc:
        log.warning(
            "no SOCK_SEQPACKET Unix sockets here (%s): the normaliser runs in the server's "
            "process; [ingest] normaliser_process = true is ignored", exc
        )  # fmt: skip
        return False
    ours.close()
    theirs.close()
    return True


class NormaliserProcess:
    def __init__(self, config: Config, on_report: Callable[[Report], None]) -> None:
        self._config = config
        self._on_report = on_report
        self._sock: socket.socket | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._supervise())
        return self._task

    def notify(self) -> None:
        """Tell the child that callbacks wait (a full socket means it has been told)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.send(_WAKE)

    async def close(self) -> None:
        """Stop the child: it finishes its batch and exits when our end of the socket closes
        (it ignores SIGTERM and SIGINT, which a service manager or Ctrl-C sends the whole
        group, so it never stops before the server asks)."""
        self._closing = True
        process = self._process
        if process is not None and process.returncode is None:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.error("normaliser process did not stop in %g s; killed", STOP_TIMEOUT_S)
                process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _supervise(self) -> None:
        config = msgspec.json.encode(self._config, enc_hook=_plain_secret)
        while not self._closing:
            try:
                outcome = f"exited ({await self._run_child(config)})"
            except Exception as exc:  # e.g. it could not be started: try again all the same
                outcome = f"failed: {type(exc).__name__}: {exc}"
            if self._closing:
                return
            log.error("normaliser process %s; restarting in %g s", outcome, RESTART_DELAY_S)
            await asyncio.sleep(RESTART_DELAY_S)

    async def _run_child(self, config: bytes) -> int:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            try:
                process = self._process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "gateway.normaliser_process", str(theirs.fileno()),
                    stdin=asyncio.subprocess.PIPE, pass_fds=(theirs.fileno(),),
                )  # fmt: skip
            finally:
                theirs.close()
            ours.setblocking(False)
            self._sock = ours
            loop.add_reader(ours.fileno(), self._read_reports, ours)
            try:
                await _send_config(process, config)
                self.notify()  # callbacks may have waited while no child ran
                return await process.wait()
            finally:
                loop.remove_reader(ours.fileno())
                self._sock = None
                if process.returncode is None:  # we gave up on it: it must not run on alone
                    process.kill()
                    await process.wait()
        finally:
            ours.close()

    def _read_reports(self, sock: socket.socket) -> None:
        messages, _ = _receive_waiting(sock)  # closed: the child has gone (`_run_child` sees it)
        for data in messages:
            try:
                self._on_report(_report_decoder.decode(data))
            except msgspec.DecodeError:
                log.error("normaliser process sent an unreadable report")


async def _send_config(process: asyncio.subprocess.Process, config: bytes) -> None:
    stdin = process.stdin
    assert stdin is not None
    stdin.write(config)
    with contextlib.suppress(ConnectionError):  # it died at once: its exit code tells
        await stdin.drain()
    stdin.close()


def _plain_secret(value: object) -> object:
    """Secrets ("env:NAME" values) go to the child as plain strings, over its stdin."""
    if isinstance(value, str):
        return str(value)
    raise NotImplementedError(f"cannot send {type(value).__name__} to the normaliser")


# The child's side ----------------------------------------------------------------------------


def main() -> None:
    logs.configure()
    # The server stops us by closing its end of the socket, after its own shutdown; signals
    # sent to the whole group (Ctrl-C, a service manager's SIGTERM) are for it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        config = msgspec.json.decode(sys.stdin.buffer.read(), type=Config)
        lower_priority(config.ingest.normaliser_priority)
        tune_for_serving()
        uvloop.run(_serve(config, sock))
    except Exception:
        log.exception("normaliser process failed")
        # A database connection's thread left open must not keep this process alive.
        os._exit(1)


def lower_priority(priority: str) -> None:
    """This process's CPU priority, as `[ingest] normaliser_priority` says."""
    if priority == "idle":
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except (AttributeError, OSError):  # not Linux, or not allowed: the next best thing
            priority = "low"
    if priority == "low":
        with contextlib.suppress(OSError):
            os.nice(NICENESS)


async def _serve(config: Config, sock: socket.socket) -> None:
    store = await Store.open(config.database.path)
    try:
        await store.leave_checkpoints_to_checkpointer()
        checkpointer = await Checkpointer.open(config.database.path)
        try:
            inbox = await Inbox.open(inbox_path(config.database.path))
            try:
                await _normalise_until_told(config, store, inbox, checkpointer, sock)
            finally:
                await inbox.close()
        finally:
            await checkpointer.close()
    finally:
        await store.close()


async def _normalise_until_told(
    config: Config, store: Store, inbox: Inbox, checkpointer: Checkpointer, sock: socket.socket
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    sock.setblocking(False)
    unsent: Outcomes = Outcomes()

    def report(outcomes: Outcomes) -> None:
        unsent.update(outcomes)
        counts = [(carrier, outcome, n) for (carrier, outcome), n in unsent.items()]
        try:
            sock.send(_report_encoder.encode(Report(counts)))
        except BlockingIOError:
            return  # the server is slow to read: these go with the next report
        except OSError:
            pass  # the server has gone: we stop next
        unsent.clear()

    clock = SystemClock()
    tracker = Tracker(store, clock, config, on_commit=lambda: None)
    normaliser = Normaliser(store, inbox, tracker, clock, report)
    wakeup = Wakeup()
    loop.add_reader(sock.fileno(), _read_wakes, sock, wakeup, stop)
    workers = [
        asyncio.create_task(
            run_forever("normaliser", normaliser.run_once, wakeup, POLL_INTERVAL_S)
        ),
        asyncio.create_task(_checkpoint_forever("inbox", inbox.checkpoint, CHECKPOINT_INTERVAL_S)),
        asyncio.create_task(
            _checkpoint_forever("database", checkpointer.checkpoint, DATABASE_CHECKPOINT_INTERVAL_S)
        ),
    ]
    await stop.wait()
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


async def _checkpoint_forever(
    what: str, checkpoint: Callable[[], Awaitable[None]], interval_s: float
) -> None:
    """Call `checkpoint` every `interval_s`. Nothing waits on it (commits checkpoint past their
    own line meanwhile), so a failure is said once, not at every try (fifty a second)."""
    failing = False

    async def step() -> int:
        nonlocal failing
        try:
            await checkpoint()
        except StoreError as exc:
            if not failing:
                log.warning("%s checkpoints failing, commits will do them: %s", what, exc)
            failing = True
            return 0
        if failing:
            log.info("%s checkpoints work again", what)
        failing = False
        return 0  # then wait the interval

    await run_forever(f"{what} checkpoint", step, Wakeup(), interval_s)


def _read_wakes(sock: socket.socket, wakeup: Wakeup, stop: asyncio.Event) -> None:
    messages, closed = _receive_waiting(sock)
    if messages:
        wakeup.notify()
    if closed:  # the server closed its end: it has stopped or died
        stop.set()


def _receive_waiting(sock: socket.socket) -> tuple[list[bytes], bool]:
    """The messages waiting on a non-blocking socket, and whether the other end has closed
    (then it is no longer watched: a closed socket stays readable)."""
    messages: list[bytes] = []
    while True:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return messages, False
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            return messages, True
        messages.append(data)


if __name__ == "__main__":
    main()
