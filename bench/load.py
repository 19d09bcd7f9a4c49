"""Benchmark: signed webhook deliveries per second and latency, the service against a bare handler.

Run: ``python -m bench.load [-n 1000] [--concurrency 1 16 64] [--repeats 3] [--postgres URL]
[--baseline REF] [--append BENCHMARKS.md]``.

Each run starts its targets as real processes on 127.0.0.1 with a fresh database, and a
load generator in a process of its own (``python -m bench.load --generate``) sends ``-n``
deliveries with ``--concurrency`` requests in flight, spread round-robin over the target's
processes: real octokit payloads (``issue_comment.created``, ``pull_request.synchronize``
from ``shared/github/webhooks/examples``), each with a fresh ``X-GitHub-Delivery`` id and
its HMAC-SHA256 signature. The targets are

- ``bare``: an aiohttp handler that reads the body and answers 202, without verifying or
  storing anything (this machine's ceiling);
- ``serve``: ``model-guard serve`` (``python -m bot``) on SQLite, without App credentials
  (deliveries are verified, planned and stored with their jobs; no job runs, so GitHub is
  never called);
- ``serve-pg x3``: three ``model-guard serve`` replicas on one PostgreSQL schema (with
  ``--postgres`` or ``$MODEL_GUARD_TEST_PG``).

After each run the deliveries in the store are counted: every one must be there exactly
once, and every answer a 202 that is not a duplicate. Reported: deliveries per second, p50
and p99 latency to the answer, and each process's resident memory (VmRSS) idle and its peak
(VmHWM) after the load, medians over ``--repeats``; the heading names the date, the commit
and the machine. ``--baseline REF`` also measures the service as it was at git REF (on
SQLite, exported with ``git archive``) in the same run. Linux only (reads /proc).
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import quote

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT.parent / "shared" / "github" / "webhooks" / "examples"
# (event, example file): both are stored by the service; neither asks GitHub anything there.
PAYLOADS = (
    ("issue_comment", "issue_comment/created.with-installation.json"),
    ("pull_request", "pull_request/synchronize.json"),
)
SECRET = "bench-secret"
WARMUP = 20  # pings before the measured load: not stored, they open the connections


@dataclass(frozen=True)
class Result:
    """One run of one target at one concurrency."""

    rate: float
    p50_ms: float
    p99_ms: float
    idle_mib: tuple[float, ...]
    peak_mib: tuple[float, ...]
    stored: int | None


def memory_mib(pid: int, field: str) -> float:
    """A process's VmRSS or VmHWM, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- the bare handler (its own process) ---------------------------------------------------


def run_bare(port: int) -> None:
    """Serve POST /webhook with 202 after reading the body, and GET /healthz, on ``port``."""

    async def webhook(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"accepted": True}, status=202)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=25 * 1024 * 1024)
    app.router.add_post("/webhook", webhook)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- the load generator (its own process) --------------------------------------------------


async def generate(spec: dict[str, object]) -> dict[str, object]:
    """Send the deliveries ``spec`` asks for; return latencies, answers and the ids sent."""
    urls = [str(u) for u in spec["urls"]]  # type: ignore[attr-defined]
    total, concurrency = int(spec["n"]), int(spec["concurrency"])  # type: ignore[call-overload]
    secret = str(spec["secret"]).encode()
    bodies = []
    for event, name in PAYLOADS:
        body = json.dumps(json.loads((EXAMPLES / name).read_bytes())).encode()
        signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        bodies.append((event, body, signature))
    ping = json.dumps(json.loads((EXAMPLES / "ping/event.json").read_bytes())).encode()
    ping_signature = "sha256=" + hmac.new(secret, ping, hashlib.sha256).hexdigest()
    latencies: list[float] = []
    answers: Counter[str] = Counter()
    ids: list[str] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(url: str, event: str, body: bytes, signature: str, delivery: str) -> str:
            headers = {
                "X-GitHub-Event": event,
                "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": signature,
                "Content-Type": "application/json",
                "User-Agent": "GitHub-Hookshot/bench",
            }
            async with session.post(url, data=body, headers=headers) as response:
                answer = await response.read()
                if response.status == 202 and b'"duplicate": true' in answer:
                    return "202 duplicate"
                return str(response.status)

        for number in range(WARMUP):
            await send(urls[number % len(urls)], "ping", ping, ping_signature, str(uuid.uuid4()))
        counter = iter(range(total))

        async def client() -> None:
            for number in counter:
                event, body, signature = bodies[number % len(bodies)]
                delivery = str(uuid.uuid4())
                ids.append(delivery)
                started = time.perf_counter()
                answer = await send(urls[number % len(urls)], event, body, signature, delivery)
                latencies.append(time.perf_counter() - started)
                answers[answer] += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "latencies": latencies, "answers": answers, "ids": ids}


def run_generator(urls: Sequence[str], *, n: int, concurrency: int) -> dict[str, object]:
    """Run the load generator in a process of its own and return what it measured."""
    spec = {"urls": list(urls), "n": n, "concurrency": concurrency, "secret": SECRET}
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", "--generate"],
        cwd=ROOT,
        input=json.dumps(spec).encode(),
        capture_output=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{done.stderr.decode()[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


# --- targets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """How to start one target's processes and count what they stored."""

    name: str
    replicas: int
    database: str | None  # None: the bare handler; "sqlite": a fresh file; else a PostgreSQL URL
    source: Path = ROOT  # the tree whose ``python -m bot`` runs (a baseline is exported)


def _service(folder: Path, port: int, database: str, source: Path) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder),
        "PYTHONPATH": str(source),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "MODEL_GUARD_DB": database,
        "MODEL_GUARD_DATA": str(folder / "data"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bot"],
        cwd=source,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(folder / f"service-{port}.log").open("ab"),
    )


def _bare(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.load", "--bare", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_healthy(ports: Sequence[int], processes: Sequence[subprocess.Popen[bytes]]) -> None:
    async with aiohttp.ClientSession() as session:
        for port, process in zip(ports, processes, strict=True):
            for _ in range(1200):
                if process.poll() is not None:
                    raise RuntimeError(f"the process on port {port} exited at start")
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"nothing answered /healthz on port {port}")


async def _count(database: str, ids: Sequence[str]) -> int:
    """Deliveries in the store, after checking every id sent is there (each id is a key)."""
    from bot.store.select import create_store

    async with create_store(database) as store:
        count = await store.delivery_count()
        known = await store.known_deliveries(ids)
    if known != set(ids):
        raise RuntimeError(f"{len(set(ids) - known)} of {len(ids)} deliveries were not stored")
    return count


def _postgres_schema(url: str, *, create: bool) -> tuple[str, str]:
    """Create a fresh schema on ``url``; return it and a URL whose sessions use it."""
    import psycopg

    schema = f"bench_load_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}" if create else f"DROP SCHEMA {schema} CASCADE")
    joiner = "&" if "?" in url else "?"
    return schema, f"{url}{joiner}options={quote(f'-c search_path={schema}')}"


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def run_once(target: Target, *, n: int, concurrency: int) -> Result:
    """Start the target fresh, load it, count what it stored, stop it."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        ports = [free_port() for _ in range(target.replicas)]
        schema = None
        database = target.database
        if database == "sqlite":
            database = str(folder / "store.sqlite3")
        elif database is not None:
            base = database
            schema, database = _postgres_schema(base, create=True)
        processes: list[subprocess.Popen[bytes]] = []
        try:
            for port in ports:
                processes.append(
                    _bare(port)
                    if database is None
                    else _service(folder, port, database, target.source)
                )
                if database is not None and len(processes) == 1 and target.replicas > 1:
                    # The first replica applies the migrations; the others start on them.
                    asyncio.run(wait_healthy(ports[:1], processes))
            asyncio.run(wait_healthy(ports, processes))
            time.sleep(1.0)  # let start-up settle before reading idle memory
            idle = tuple(memory_mib(p.pid, "VmRSS") for p in processes)
            outcome = run_generator(
                [f"http://127.0.0.1:{port}/webhook" for port in ports], n=n, concurrency=concurrency
            )
            peak = tuple(memory_mib(p.pid, "VmHWM") for p in processes)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        answers = dict(outcome["answers"])  # type: ignore[call-overload]
        if answers != {"202": n}:
            raise RuntimeError(f"{target.name}: unexpected answers {answers}")
        stored = None
        if database is not None:
            ids = list(outcome["ids"])  # type: ignore[call-overload]
            stored = asyncio.run(_count(database, ids))
            if stored != n or len(set(ids)) != n:
                raise RuntimeError(f"{target.name}: {stored} deliveries stored for {n} sent")
        if schema is not None and target.database is not None:
            _drop_schema(target.database, schema)
        latencies = sorted(outcome["latencies"])  # type: ignore[call-overload]
        return Result(
            rate=n / float(outcome["elapsed"]),  # type: ignore[arg-type]
            p50_ms=1000 * _quantile(latencies, 0.50),
            p99_ms=1000 * _quantile(latencies, 0.99),
            idle_mib=idle,
            peak_mib=peak,
            stored=stored,
        )


def _quantile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank quantile of sorted values."""
    index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def _median(results: Sequence[Result], attribute: str) -> float:
    return statistics.median(getattr(r, attribute) for r in results)


def _memory(results: Sequence[Result], attribute: str) -> str:
    """Median per process over the repeats, as ``a`` or ``a / b / c`` MiB."""
    columns = zip(*(getattr(r, attribute) for r in results), strict=True)
    return " / ".join(f"{statistics.median(c):.0f}" for c in columns)


def machine() -> str:
    """nproc, the CPU model and the Python, for the results' heading."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, commit {commit}"
        f"{' (with uncommitted changes)' if dirty else ''}; {os.cpu_count()} cores ({model}), "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}; load average before the run {load}"
    )


def _timed(steps: dict[str, list[float]], step: str, started: float) -> None:
    steps.setdefault(step, []).append(1e6 * (time.perf_counter() - started))


async def spans(repeats: int) -> list[str]:
    """Time each step of accepting one delivery in this process, without HTTP: median µs."""
    import io
    import logging
    from datetime import UTC, datetime

    from gidgethub import sansio

    from bot.handlers import ROUTERS
    from bot.intake.planner import Planner
    from bot.intake.sanitise import parse_json_object
    from bot.logs import JsonFormatter
    from bot.store import Delivery, SqliteStore

    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    log = logging.Logger("model_guard.ingress")
    log.addHandler(handler)
    planner = Planner(ROUTERS)
    rows = ["| step | " + " | ".join(f"{event} µs" for event, _ in PAYLOADS) + " |"]
    rows.append("|---|" + "---:|" * len(PAYLOADS))
    timings: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        async with SqliteStore(Path(folder) / "spans.sqlite3") as store:
            for event, name in PAYLOADS:
                body = json.dumps(json.loads((EXAMPLES / name).read_bytes())).encode()
                steps: dict[str, list[float]] = {}
                timed = partial(_timed, steps)
                for number in range(repeats):
                    started = time.perf_counter()
                    hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                    timed("HMAC-SHA256 of the body", started)
                    started = time.perf_counter()
                    data = parse_json_object(body)
                    timed("parse and check (sanitise)", started)
                    started = time.perf_counter()
                    jobs = await planner.plan(sansio.Event(data, event=event, delivery_id="x"))
                    timed("plan the jobs (routers)", started)
                    started = time.perf_counter()
                    digest = hashlib.sha256(body).hexdigest()
                    timed("SHA-256 of the body (stored)", started)
                    record = Delivery(
                        delivery_id=f"{event}-{number}",
                        event=event,
                        action=str(data.get("action")),
                        installation_id=None,
                        repository=None,
                        received_at=datetime.now(UTC),
                        payload_sha256=digest,
                    )
                    started = time.perf_counter()
                    await store.record_delivery(record, jobs)
                    timed("store delivery + jobs (SQLite, one transaction)", started)
                    started = time.perf_counter()
                    log.info("delivery %s", "accepted", extra={"fields": {"event": event}})
                    timed("one JSON log line", started)
                for step, values in steps.items():
                    timings.setdefault(step, []).append(statistics.median(values))
    for step, values in timings.items():
        rows.append(f"| {step} | " + " | ".join(f"{value:.0f}" for value in values) + " |")
    return rows


def export(ref: str, folder: Path) -> Path:
    """Write the tree at git ``ref`` to ``folder`` (no worktree is touched)."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", ref], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments and run the benchmark (or one of its helper processes)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="deliveries per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres", default=os.environ.get("MODEL_GUARD_TEST_PG"))
    parser.add_argument(
        "--targets", nargs="+", default=["bare", "serve", "serve-pg"], help="which to measure"
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="REF",
        help="git ref whose service to measure too (on SQLite), e.g. main; repeatable",
    )
    parser.add_argument(
        "--append", type=Path, metavar="FILE", help="also append the results to FILE"
    )
    parser.add_argument(
        "--spans",
        action="store_true",
        help="time each step of accepting a delivery in this process instead (median µs)",
    )
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate:
        result = asyncio.run(generate(json.loads(sys.stdin.read())))
        print(json.dumps(result))
        return
    if args.bare is not None:
        run_bare(args.bare)
        return
    if args.spans:
        print("\n".join(asyncio.run(spans(args.repeats * 100))))
        return
    targets = {
        "bare": Target("bare aiohttp handler (ceiling)", 1, None),
        "serve": Target("model-guard serve, SQLite", 1, "sqlite"),
    }
    if args.postgres:
        targets["serve-pg"] = Target("model-guard serve x3, PostgreSQL", 3, args.postgres)
        targets["bare3"] = Target("bare aiohttp handler x3", 3, None)
    chosen = [targets[name] for name in args.targets if name in targets]
    with tempfile.TemporaryDirectory() as exported:
        at = len(chosen) if targets["serve"] not in chosen else chosen.index(targets["serve"]) + 1
        for number, ref in enumerate(args.baseline):
            source = export(ref, Path(exported) / str(number))
            name = f"model-guard serve, SQLite, at {ref}"
            chosen.insert(at + number, Target(name, 1, "sqlite", source))
        measure(chosen, args)


def measure(chosen: Sequence[Target], args: argparse.Namespace) -> None:
    """Run every target at every concurrency and print the table (and append it to a file)."""
    lines: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    command = " ".join(["python -m bench.load", *sys.argv[1:]]).replace(
        str(args.postgres or "\0"), "URL"
    )
    emit(f"`{command}`: {machine()}")
    emit(f"{args.n} deliveries per run, median of {args.repeats} runs\n")
    emit(
        "| target | concurrency | deliveries/s | p50 ms | p99 ms | ratio to ceiling (rate) "
        "| stored | RSS idle MiB | peak RSS MiB |"
    )
    emit("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    ceiling: dict[int, float] = {}
    for concurrency in args.concurrency:
        # Targets take turns within each repeat, so a busy spell on the machine falls on all.
        runs: dict[str, list[Result]] = {target.name: [] for target in chosen}
        for _ in range(args.repeats):
            for target in chosen:
                runs[target.name].append(run_once(target, n=args.n, concurrency=concurrency))
        for target in chosen:
            results = runs[target.name]
            rate = _median(results, "rate")
            if target.database is None and target.replicas == 1:
                ceiling[concurrency] = rate
            ratio = f"{rate / ceiling[concurrency]:.2f}" if concurrency in ceiling else "-"
            stored = (
                "-"
                if results[0].stored is None
                else ("exactly once" if all(r.stored == args.n for r in results) else "NO")
            )
            emit(
                f"| {target.name} | {concurrency} | {rate:.0f} | {_median(results, 'p50_ms'):.1f}"
                f" | {_median(results, 'p99_ms'):.1f} | {ratio} | {stored}"
                f" | {_memory(results, 'idle_mib')} | {_memory(results, 'peak_mib')} |"
            )
    if args.append is not None:
        with args.append.open("a", encoding="utf-8") as out:
            out.write("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
