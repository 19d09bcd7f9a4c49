"""Tests for the engine process pool: results, errors, time limits, crashes, a free event loop."""

import asyncio
import multiprocessing
import operator
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.judging.pool import (
    EngineCrashed,
    EnginePool,
    EnginePoolClosed,
    EngineTaskError,
    EngineTimeout,
    RemoteTraceback,
)
from engine.errors import ModelRejected

# -- functions run in the worker processes (module level, so they pickle by reference) ------


def whoami() -> int:
    return os.getpid()


def scaled_sum(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


def reject_model(name: str) -> None:
    raise ModelRejected(f"{name}: output has NaN for 3 of 40 clips")


class TwoPartError(Exception):
    """An error whose constructor takes two arguments, so unpickling it fails."""

    def __init__(self, left: str, right: str) -> None:
        super().__init__(f"{left}/{right}")


def raise_two_part() -> None:
    raise TwoPartError("left", "right")


def return_unpicklable() -> object:
    return lambda: None


def sleep_after_writing_pid(path: str, seconds: float) -> str:
    Path(path).write_text(str(os.getpid()), encoding="utf-8")
    time.sleep(seconds)
    return "finished"


def sleep_then_return(seconds: float, value: str) -> str:
    time.sleep(seconds)
    return value


def whoami_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def wait_for_file(path: str, seconds: float) -> bool:
    """Return True once ``path`` exists; False if it did not appear within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.01)
    return False


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
async def pool() -> AsyncIterator[EnginePool]:
    engine = EnginePool(processes=1, timeout=60.0)
    try:
        yield engine
    finally:
        await engine.close()


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def read_pid(path: Path) -> int:
    async with asyncio.timeout(30):
        while not path.exists() or not path.read_text(encoding="utf-8"):
            await asyncio.sleep(0.01)
    return int(path.read_text(encoding="utf-8"))


def engine_children() -> list[multiprocessing.Process]:
    return [
        child for child in multiprocessing.active_children() if child.name == "model-guard-engine"
    ]


# -- results and errors ---------------------------------------------------------------------


async def test_pool_returns_the_result_computed_in_another_process(pool: EnginePool) -> None:
    assert await pool.run(scaled_sum, 2, 3, scale=10) == 50
    child = await pool.run(whoami)
    assert child != os.getpid()
    # The process is kept for the next task (no interpreter start per task).
    assert await pool.run(whoami) == child


async def test_exception_from_the_function_propagates_with_its_type_and_message(
    pool: EnginePool,
) -> None:
    with pytest.raises(ZeroDivisionError, match="division by zero"):
        await pool.run(operator.truediv, 1, 0)
    with pytest.raises(ModelRejected, match="fr-v3: output has NaN for 3 of 40 clips") as raised:
        await pool.run(reject_model, "fr-v3")
    cause = raised.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "reject_model" in str(cause)


async def test_error_that_cannot_be_pickled_arrives_as_engine_task_error_naming_it(
    pool: EnginePool,
) -> None:
    with pytest.raises(EngineTaskError, match=r"TwoPartError: left/right"):
        await pool.run(raise_two_part)
    assert await pool.run(scaled_sum, 1, 1) == 2


async def test_function_that_cannot_be_pickled_is_refused_and_the_pool_still_works(
    pool: EnginePool,
) -> None:
    with pytest.raises(EngineTaskError, match="must be a module-level function") as raised:
        await pool.run(lambda: 1)
    assert "\n" not in str(raised.value)
    with pytest.raises(EngineTaskError, match="result of return_unpicklable cannot be pickled"):
        await pool.run(return_unpicklable)
    assert await pool.run(scaled_sum, 1, 2) == 3


# -- time limits ------------------------------------------------------------------------------


async def test_work_past_its_time_limit_raises_engine_timeout_and_its_process_is_killed(
    pool: EnginePool, tmp_path: Path
) -> None:
    await pool.run(whoami)  # start the process first, so the limit is spent sleeping
    pid_file = tmp_path / "pid"
    with pytest.raises(EngineTimeout) as raised:
        await pool.run(sleep_after_writing_pid, str(pid_file), 60.0, timeout=1.0)
    assert str(raised.value) == "engine work exceeded the 1 s limit"
    stuck = int(pid_file.read_text(encoding="utf-8"))
    assert process_gone(stuck)
    replacement = await pool.run(whoami)
    assert replacement != stuck


async def test_a_timeout_does_not_lose_other_work_in_flight(tmp_path: Path) -> None:
    engine = EnginePool(processes=2, timeout=60.0)
    try:
        await asyncio.gather(engine.run(whoami), engine.run(whoami))
        kept, stuck = await asyncio.gather(
            engine.run(sleep_then_return, 1.0, "kept"),
            engine.run(sleep_then_return, 60.0, "never", timeout=0.3),
            return_exceptions=True,
        )
        assert kept == "kept"
        assert isinstance(stuck, EngineTimeout)
        assert await engine.run(scaled_sum, 20, 22) == 42
    finally:
        await engine.close()


# -- crashes ------------------------------------------------------------------------------------


async def test_process_that_exits_gives_engine_crashed_and_the_pool_recovers(
    pool: EnginePool,
) -> None:
    with pytest.raises(EngineCrashed, match=r"running _exit died \(exit code 3\)"):
        await pool.run(os._exit, 3)
    with pytest.raises(EngineCrashed, match=r"running kill_self died \(killed by SIGKILL\)"):
        await pool.run(kill_self)
    assert await pool.run(scaled_sum, 4, 5) == 9


# -- the event loop and shutdown ------------------------------------------------------------


async def test_event_loop_keeps_running_while_engine_work_runs(
    pool: EnginePool, tmp_path: Path
) -> None:
    signal_file = tmp_path / "go"
    ticks = 0

    async def ticker() -> None:
        # Only this coroutine creates the file the engine work waits for: if run() blocked
        # the loop, the file would never appear and the work would return False.
        nonlocal ticks
        while ticks < 20:
            ticks += 1
            await asyncio.sleep(0.01)
        signal_file.touch()

    ticking = asyncio.create_task(ticker())
    assert await pool.run(wait_for_file, str(signal_file), 30.0) is True
    await ticking
    assert ticks == 20


async def test_cancelling_a_run_kills_the_process_doing_the_work(
    pool: EnginePool, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    running = asyncio.create_task(pool.run(sleep_after_writing_pid, str(pid_file), 60.0))
    pid = await read_pid(pid_file)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert process_gone(pid)
    assert await pool.run(scaled_sum, 1, 1) == 2


async def test_close_stops_work_in_flight_and_later_runs_are_refused(tmp_path: Path) -> None:
    engine = EnginePool(processes=1)
    pid_file = tmp_path / "pid"
    running = asyncio.create_task(engine.run(sleep_after_writing_pid, str(pid_file), 60.0))
    pid = await read_pid(pid_file)
    await engine.close()
    with pytest.raises(EnginePoolClosed):
        await running
    assert process_gone(pid)
    assert engine_children() == []
    with pytest.raises(EnginePoolClosed, match="the engine pool is closed"):
        await engine.run(scaled_sum, 1, 1)
    await engine.close()  # idempotent


async def test_close_stops_idle_processes() -> None:
    engine = EnginePool(processes=2)
    pids = set(await asyncio.gather(engine.run(whoami_after, 0.3), engine.run(whoami_after, 0.3)))
    assert len(pids) == 2
    await engine.close()
    assert engine_children() == []
    assert all(process_gone(pid) for pid in pids)
