"""Benchmark: the webhook service's memory under clients that start a large body and stall.

Run: ``python -m bench.ingress [--baseline REF] [--clients 40] [--sent 4096 24117248]``.
Starts ``model-guard serve`` (``python -m bot``) as a real process on 127.0.0.1 with a
throw-away database, opens ``--clients`` connections that each send the headers of a
24 MiB signed-looking delivery and the first ``--sent`` bytes of its body, then stall for
``--stall`` seconds and go away. The service's resident memory (VmRSS from /proc) is read
before, at its highest while the clients stall, and ``--settle`` seconds after they left.
With ``--baseline REF`` the same is measured, in the same run, for the service as it was
at git REF (exported with ``git archive`` to a temporary folder). It then sends
``--labels`` unsigned requests with random event names and reports how large /metrics
grew. Linux only (reads /proc).
"""

import argparse
import asyncio
import os
import random
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.load import free_port, memory_mib, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
BODY_BYTES = 24 * 1024 * 1024
SECRET = "bench-secret"


@dataclass(frozen=True)
class Figures:
    """One service's memory and /metrics size in one scenario, in MiB and bytes."""

    before_mib: float
    peak_mib: float
    after_mib: float
    answered: dict[str, int]
    metrics_before: int
    metrics_after: int


def start_service(source: Path, folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``python -m bot`` from ``source`` on a free loopback port."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder),
        "PYTHONPATH": str(source),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "MODEL_GUARD_DB": str(folder / "store.sqlite3"),
        "MODEL_GUARD_DATA": str(folder / "data"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bot"],
        cwd=source,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, port


async def stalled_client(port: int, sent: int, index: int, answers: list[str]) -> None:
    """Send headers and ``sent`` bytes of a 24 MiB body, then wait for an answer or the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        "POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "X-GitHub-Event: pull_request\r\n"
        f"X-GitHub-Delivery: bench-{index}\r\n"
        f"X-Hub-Signature-256: sha256={'0' * 64}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {BODY_BYTES}\r\n\r\n"
    )
    writer.write(head.encode())
    block = b"x" * (1024 * 1024)
    left = sent
    try:
        while left > 0:
            writer.write(block[: min(left, len(block))])
            left -= min(left, len(block))
            await writer.drain()
        line = await reader.readline()
        answers.append(line.split()[1].decode() if line else "closed")
    except ConnectionError:
        answers.append("closed")
    except asyncio.CancelledError:
        answers.append("no answer")  # still stalled when the bench gave up
        raise
    finally:
        writer.close()


async def metrics_size(port: int) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return len(await response.read())


async def random_event_names(port: int, count: int) -> None:
    rng = random.Random(7)
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            name = "".join(rng.choices(string.ascii_lowercase, k=16))
            headers = {"X-GitHub-Event": name, "X-GitHub-Delivery": "bench"}
            async with session.post(
                f"http://127.0.0.1:{port}/webhook", data=b"{}", headers=headers
            ) as response:
                await response.read()


async def measure(
    source: Path, *, clients: int, sent: int, stall: float, settle: float, labels: int
) -> Figures:
    """Run one service from ``source`` through the stalled clients and the random event names."""
    with tempfile.TemporaryDirectory() as folder:
        process, port = start_service(source, Path(folder))
        try:
            await wait_healthy([port], [process])
            before = memory_mib(process.pid, "VmRSS")
            answers: list[str] = []
            tasks = [
                asyncio.create_task(stalled_client(port, sent, index, answers))
                for index in range(clients)
            ]
            peak = before
            deadline = time.monotonic() + stall
            while time.monotonic() < deadline:
                peak = max(peak, memory_mib(process.pid, "VmRSS"))
                await asyncio.sleep(0.05)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(settle)
            after = memory_mib(process.pid, "VmRSS")
            metrics_before = await metrics_size(port)
            await random_event_names(port, labels)
            metrics_after = await metrics_size(port)
        finally:
            process.terminate()
            process.wait(timeout=30)
    counted: dict[str, int] = {}
    for answer in answers:
        counted[answer] = counted.get(answer, 0) + 1
    return Figures(before, peak, after, counted, metrics_before, metrics_after)


def export(ref: str, folder: Path) -> Path:
    """Write the tree at git ``ref`` to ``folder`` (no worktree is touched)."""
    archive = subprocess.run(
        ["git", "archive", ref], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git ref to measure in the same run, e.g. main")
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--sent", type=int, nargs="+", default=[4096, 23 * 1024 * 1024])
    parser.add_argument("--stall", type=float, default=15.0, help="seconds the clients stall")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--labels", type=int, default=2000, help="unsigned random-event requests")
    args = parser.parse_args()
    print(
        f"Python {sys.version.split()[0]}, {os.uname().sysname} {os.uname().release}, "
        f"{os.cpu_count()} cores; {args.clients} clients, 24 MiB Content-Length, "
        f"stall {args.stall:g} s, settle {args.settle:g} s"
    )
    with tempfile.TemporaryDirectory() as baseline_folder:
        sources = {"this tree": ROOT}
        if args.baseline:
            sources[args.baseline] = export(args.baseline, Path(baseline_folder))
        print(
            "| service | body sent before stalling | RSS before MiB | peak MiB | after MiB "
            "| answers | /metrics bytes before → after random events |"
        )
        print("|---|---:|---:|---:|---:|---|---|")
        for sent in args.sent:
            for name, source in sources.items():
                figures = asyncio.run(
                    measure(
                        source,
                        clients=args.clients,
                        sent=sent,
                        stall=args.stall,
                        settle=args.settle,
                        labels=args.labels,
                    )
                )
                answers = ", ".join(f"{k}: {v}" for k, v in sorted(figures.answered.items()))
                print(
                    f"| {name} | {sent:,} B | {figures.before_mib:.0f} | {figures.peak_mib:.0f} "
                    f"| {figures.after_mib:.0f} | {answers} | {figures.metrics_before:,} → "
                    f"{figures.metrics_after:,} ({args.labels:,} requests) |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
