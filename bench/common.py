"""What the benchmarks share: free ports, server processes, the gateway CLI and read-only queries.

The benchmarks run as scripts (`python bench/x.py`), so each puts the repository root on sys.path
before importing this module.
"""

from __future__ import annotations

import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout_s} s")


@contextmanager
def server(argv: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, its output in `log`; terminated (then killed) on the way out."""
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)  # noqa: S603
        try:
            wait_listening(port, process)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def gateway_cli(config: Path, *args: str) -> str:
    argv = [sys.executable, "-m", "gateway", *args, "--config", str(config)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"gateway {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def query(database: Path, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    """Read-only, so the gateway's file is never written by the benchmark."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return db.execute(sql, params).fetchall()


def allow_local_webhooks(config: Path) -> Path:
    """Adds `[webhooks] allowed_networks = ["127.0.0.0/8"]` to a config without that section, so
    customer endpoints on this machine pass the address guard."""
    config.write_text(config.read_text() + '\n[webhooks]\nallowed_networks = ["127.0.0.0/8"]\n')
    return config


def spread(values: list[float], digits: int = 0) -> str:
    """`median (min-max)` of a figure over a benchmark's rounds; one value alone as it is."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    low, high = min(values), max(values)
    return f"{statistics.median(values):.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"
