"""Engine work off the event loop: a few long-lived spawned processes, each killable on its own.

Why this shape:

- ``concurrent.futures.ProcessPoolExecutor`` cannot stop one task. Ending a stuck task means
  terminating the executor, which breaks every other future in flight (``BrokenProcessPool``),
  and a worker that dies (a segfault in onnxruntime) breaks the whole pool the same way.
- One fresh process per task would be killable, but every task would pay interpreter start
  plus the numpy/onnxruntime imports again.

So the pool keeps ``processes`` worker processes, each with its own duplex pipe and running
one task at a time. A task that overruns its limit is SIGKILLed with its process alone (a
call stuck inside native code does not see SIGTERM or an exception) and the slot gets a new
process on next use; a process that dies fails only its own task, with ``EngineCrashed``.
Processes come from the ``spawn`` context, never ``fork``: the parent runs an event loop and
threads (the store's), and a forked child would inherit their locks mid-state
(https://docs.python.org/3/library/multiprocessing.html#contexts-and-start-methods).

The parent waits for a reply on a small thread pool (one thread per process, blocked in
``recv``), awaited with ``asyncio.wrap_future``, so the event loop never blocks. Arguments and
results are pickled: pass paths and small values, not large arrays.
"""

import asyncio
import contextlib
import logging
import multiprocessing
import pickle
import signal
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, TypeVar, cast

from bot.errors import BotError

log = logging.getLogger("model_guard.enginepool")

T = TypeVar("T")

# An empty message asks a worker process to exit.
_STOP = b""
_JOIN_SECONDS = 10.0


class EnginePoolError(BotError):
    """Base of the errors the engine pool raises on purpose."""


class EngineTimeout(EnginePoolError):
    """The engine work ran past its time limit; its process was killed."""


class EngineCrashed(EnginePoolError):
    """The process running the engine work died (killed, out of memory, segfault)."""


class EngineTaskError(EnginePoolError):
    """The function, its arguments, its result or its error cannot cross the process boundary."""


class EnginePoolClosed(EnginePoolError):
    """The pool was used after ``close()`` (or closed while the work ran)."""


class RemoteTraceback(Exception):
    """The traceback of an error raised in a worker process, chained as the error's cause."""

    def __init__(self, text: str) -> None:
        """Keep the formatted traceback text."""
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        """Return the traceback as the child formatted it."""
        return self.text


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


def _portable(error: Exception) -> Exception:
    """Return ``error`` if it survives a pickle round trip, else an EngineTaskError naming it."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return EngineTaskError(
            f"{type(error).__name__}: {error} (this error type cannot be sent between processes)"
        )
    return error


def _encode_reply(fn: object, reply: tuple[Any, ...]) -> bytes:
    try:
        return pickle.dumps(reply)
    except Exception as error:
        failure = EngineTaskError(f"the result of {_name(fn)} cannot be pickled: {error}")
        return pickle.dumps(("error", failure, ""))


def serve(conn: Connection) -> None:
    """Worker process main loop: run each task from the pipe, answer on it, until told to stop."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent went away
        if message == _STOP:
            return
        fn: object = None
        try:
            fn, args, kwargs = pickle.loads(message)
            reply: tuple[Any, ...] = ("ok", fn(*args, **kwargs))  # type: ignore[operator]
        except Exception as error:
            reply = ("error", _portable(error), traceback.format_exc())
        try:
            conn.send_bytes(_encode_reply(fn, reply))
        except (EOFError, OSError):
            return


class _Worker:
    """One spawned worker process and the parent's end of its pipe."""

    def __init__(self, context: SpawnContext) -> None:
        parent_end, child_end = context.Pipe(duplex=True)
        self.process: SpawnProcess = context.Process(
            target=serve, args=(child_end,), name="model-guard-engine", daemon=True
        )
        try:
            self.process.start()
        finally:
            child_end.close()  # only the child holds it now, so its death reads as EOF here
        self.conn = parent_end

    def exchange(self, message: bytes) -> tuple[Any, ...]:
        """Send one task and block until its reply (runs on a pool thread)."""
        self.conn.send_bytes(message)
        data = self.conn.recv_bytes()
        try:
            reply = pickle.loads(data)
        except Exception as error:
            reply = ("error", EngineTaskError(f"cannot read the reply: {error}"), "")
        return cast(tuple[Any, ...], reply)

    def death(self) -> str:
        """Describe how the process ended (after it was joined)."""
        code = self.process.exitcode
        if code is None:
            return "it closed its pipe"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def retire(self, *, kill: bool) -> None:
        """Stop the process (politely unless ``kill``), reap it and close the pipe (blocking)."""
        if not kill and self.process.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send_bytes(_STOP)
            self.process.join(_JOIN_SECONDS)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(_JOIN_SECONDS)
        self.conn.close()


class EnginePool:
    """Runs picklable module-level functions in spawned processes with a time limit each."""

    def __init__(self, *, processes: int = 1, timeout: float = 900.0) -> None:
        """Configure the pool; processes start on first use."""
        if processes < 1:
            raise EnginePoolError(f"processes must be >= 1, got {processes}")
        if not timeout > 0:
            raise EnginePoolError(f"timeout must be > 0 seconds, got {timeout}")
        self.processes = processes
        self.timeout = timeout
        self._context = multiprocessing.get_context("spawn")
        self._threads = ThreadPoolExecutor(
            max_workers=processes, thread_name_prefix="model-guard-engine"
        )
        self._workers: list[_Worker | None] = [None] * processes
        self._idle: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(processes):
            self._idle.put_nowait(slot)
        self._busy: set[int] = set()
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False

    async def run_before(
        self, deadline: float, budget: float, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> T:
        """``run`` within what is left until ``deadline`` (``time.monotonic``) of a ``budget``-second run.

        Every call of one judged run shares the run's budget, so many slow calls cannot
        hold a worker for ever; past the deadline nothing is sent.
        """
        left = deadline - time.monotonic()
        if left <= 0:
            raise EngineTimeout(f"engine work exceeded the {budget:g} s limit of a run")
        return await self.run(fn, *args, timeout=left, **kwargs)

    async def run(
        self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker process and return its result.

        Raises what ``fn`` raised (with its type, when it pickles), ``EngineTimeout`` after
        ``timeout`` seconds (default: the pool's), ``EngineCrashed`` if the process died.
        Time spent waiting for a free process does not count against the limit.
        """
        limit = self.timeout if timeout is None else timeout
        if not limit > 0:
            raise EnginePoolError(f"timeout must be > 0 seconds, got {limit}")
        self._require_open()
        try:
            message = pickle.dumps((fn, args, kwargs))
        except Exception as error:
            raise EngineTaskError(
                f"cannot send {_name(fn)} to an engine process (it must be a module-level"
                f" function with picklable arguments): {error}"
            ) from None
        slot = await self._idle.get()
        self._busy.add(slot)
        try:
            self._require_open()
            worker = await self._ready(slot)
            self._require_open()  # closed while the process started: close() retires it
            reply = await self._exchange(slot, worker, message, fn=fn, limit=limit)
        finally:
            self._busy.discard(slot)
            self._idle.put_nowait(slot)
        if reply[0] == "ok":
            return cast(T, reply[1])
        failure: BaseException = reply[1]
        if reply[2]:
            raise failure from RemoteTraceback(reply[2])
        raise failure

    async def close(self) -> None:
        """Stop every process (killing any still working) and release the threads (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for slot in self._busy:
            worker = self._workers[slot]
            if worker is not None and worker.process.is_alive():
                # Its run() sees the pipe close, reaps the process and raises EnginePoolClosed.
                worker.process.kill()
        # Collect every slot: busy runs hand theirs back as soon as their process is gone.
        for _ in range(self.processes):
            await self._idle.get()
        loop = asyncio.get_running_loop()
        idle = [worker for worker in self._workers if worker is not None]
        self._workers = [None] * self.processes
        await asyncio.gather(
            *(loop.run_in_executor(None, partial(worker.retire, kill=False)) for worker in idle)
        )
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        await loop.run_in_executor(None, self._threads.shutdown, True)
        for slot in range(self.processes):
            self._idle.put_nowait(slot)

    def _require_open(self) -> None:
        if self._closed:
            raise EnginePoolClosed("the engine pool is closed")

    async def _ready(self, slot: int) -> _Worker:
        """Return the slot's live process, starting a new one if it has none."""
        worker = self._workers[slot]
        if worker is not None and worker.process.is_alive():
            return worker
        loop = asyncio.get_running_loop()
        if worker is not None:
            self._workers[slot] = None
            await loop.run_in_executor(None, partial(worker.retire, kill=True))
        spawning = loop.run_in_executor(self._threads, _Worker, self._context)
        try:
            fresh = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            # The process is being started regardless: keep it in its slot, not orphaned.
            self._workers[slot] = await spawning
            raise
        self._workers[slot] = fresh
        log.info("engine process started", extra={"fields": {"pid": fresh.process.pid}})
        return fresh

    async def _exchange(
        self, slot: int, worker: _Worker, message: bytes, *, fn: object, limit: float
    ) -> tuple[Any, ...]:
        """Send a task to ``worker`` and await its reply within ``limit`` seconds."""
        pending: Future[tuple[Any, ...]] = self._threads.submit(worker.exchange, message)
        try:
            async with asyncio.timeout(limit):
                return await asyncio.wrap_future(pending)
        except TimeoutError:
            await self._discard(slot, worker, pending)
            self._require_open()
            log.error(
                "engine work timed out; its process was killed",
                extra={"fields": {"function": _name(fn), "limit_seconds": limit}},
            )
            raise EngineTimeout(f"engine work exceeded the {limit:g} s limit") from None
        except (EOFError, OSError):
            await self._discard(slot, worker, pending)
            self._require_open()
            how = worker.death()
            log.error(
                "engine process died",
                extra={"fields": {"function": _name(fn), "pid": worker.process.pid, "how": how}},
            )
            raise EngineCrashed(f"the engine process running {_name(fn)} died ({how})") from None
        except asyncio.CancelledError:
            # Nobody will read this result: stop the work rather than let it run on.
            await self._discard(slot, worker, pending)
            raise

    async def _discard(self, slot: int, worker: _Worker, pending: Future[tuple[Any, ...]]) -> None:
        """Kill ``worker``, wait for its pipe thread and reap it; the slot restarts on next use."""
        if self._workers[slot] is worker:
            self._workers[slot] = None
        if worker.process.is_alive():
            worker.process.kill()
        retiring = asyncio.create_task(self._reap(worker, pending))
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)
        # Shielded: a second cancellation must not leave a zombie or an open pipe behind.
        await asyncio.shield(retiring)

    async def _reap(self, worker: _Worker, pending: Future[tuple[Any, ...]]) -> None:
        loop = asyncio.get_running_loop()
        # The pipe thread returns (EOF) once the process is dead; close the pipe only after.
        with contextlib.suppress(Exception):
            await asyncio.wrap_future(pending)
        await loop.run_in_executor(None, partial(worker.retire, kill=True))
