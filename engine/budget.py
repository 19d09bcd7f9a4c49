"""One model's onnxruntime load and run in a child process held to a memory and a time budget.

Allowed ops can still build huge tensors from the [N, 6] input (an [N, N] product, a
Concat that doubles at every step) or run for minutes (a chain of [N, N] MatMuls), and
no static check sees that. So ``score_within_budget`` creates the session and runs it in
a child process that:

- caps its own address space (``RLIMIT_AS``) at what it had when it started plus the
  memory budget, so an allocation past the budget fails inside onnxruntime (or kills the
  child) instead of taking the machine's memory;
- is killed by the parent once the wall-time budget is over (and caps its own CPU time a
  little past it, so a child orphaned by a killed parent cannot run on).

The child is forked: the parent has already imported numpy and onnxruntime
(``engine.scoring`` imports them) and holds the feature matrix, so the child starts without
imports or copying (bench/budget.py measures the cost). Where the platform cannot fork
(Windows), scoring runs in-process and only the static dense-size check applies. It tells the
parent which phase it is in ("loading", "scoring"), so a failure names it. Running out of
budget raises ``BudgetExceeded``; any other problem is the model's own ``ModelRejected``.
"""

import math
import os
import re
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NoReturn

from engine.errors import BudgetExceeded, ModelRejected, UsageError

if TYPE_CHECKING:  # engine.scoring imports this module's defaults; import it when scoring
    import numpy as np

    from engine.scoring import CheckedModel

try:  # not on Windows: there, only the time limit applies
    import resource
except ImportError:  # pragma: no cover
    resource = None  # type: ignore[assignment]

# The defaults (docs/scoring.md). The models this guards are small MLPs: on the 100,000-row
# benchmark cache one takes about 40 ms and a few tens of MiB (its [N, hidden] activations).
# 1 GiB is room for far wider ones while two engine processes still fit a small machine; a
# minute is over a thousand times a real model's time, yet bounds a night of many hostile
# models to a minute per model.
DEFAULT_MEMORY_MIB = 1024
DEFAULT_TIMEOUT_S = 60.0
_MIB = 1024 * 1024
# How onnxruntime, the C++ runtime and numpy say that an allocation failed.
_OUT_OF_MEMORY = re.compile(
    r"bad[_ ]alloc|bad allocation|failed to allocate|out of memory|cannot allocate|MemoryError",
    re.IGNORECASE,
)
# Above any descriptor a process here has open (os.closerange uses close_range on Linux).
_MAX_FD = 1 << 20
# Seconds of CPU time the child may use past the wall-time budget before the kernel stops it.
_CPU_GRACE_S = 5


@dataclass(frozen=True)
class ScoringLimits:
    """Safety limits for inspecting a model and the onnxruntime settings for scoring it.

    Defined here, beside the budget, rather than in ``engine.scoring``: settings build it,
    and this module imports neither numpy nor onnxruntime (``engine.scoring`` re-exports it).
    """

    max_bytes: int = 16 * _MIB
    max_opset: int = 21
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    # The budget of one model's evaluation: memory its loading and scoring may add to the
    # process, and wall time for both (see docs/scoring.md for why these defaults).
    max_memory_bytes: int = DEFAULT_MEMORY_MIB * _MIB
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        """Refuse limits that make no sense (0 threads would mean 'all cores' to onnxruntime)."""
        if self.max_bytes < 1:
            raise UsageError(f"max_bytes must be positive, not {self.max_bytes}")
        if self.max_memory_bytes < _MIB:
            raise UsageError(
                f"the memory budget must be at least 1 MiB, not {self.max_memory_bytes} bytes"
            )
        if not self.timeout_s > 0:
            raise UsageError(f"the model timeout must be positive, not {self.timeout_s}")
        if self.max_opset < 1:
            raise UsageError(f"max_opset must be at least 1, not {self.max_opset}")
        if self.intra_op_threads < 1 or self.inter_op_threads < 1:
            raise UsageError("onnxruntime thread counts must be at least 1")


def score_within_budget(
    model: "CheckedModel",
    matrix: "np.ndarray",
    *,
    codec: "np.ndarray | None" = None,
    limits: ScoringLimits,
) -> "np.ndarray":
    """Score like ``score_model``, in a child process held to ``limits``' memory and time budget.

    Raises ``BudgetExceeded`` with a one-line reason ("exceeded 1024 MiB while loading",
    "exceeded the 60 s limit while scoring") when the model runs out of budget. Where the
    platform cannot fork, the model is scored in this process with no run-time budget.
    """
    if not hasattr(os, "fork"):  # pragma: no cover
        from engine.scoring import score_model

        return score_model(model, matrix, codec=codec, limits=limits)
    read_end, write_end = os.pipe()
    # os.fork, not multiprocessing: the App's engine workers are daemonic processes, which
    # multiprocessing does not let start children.
    pid = os.fork()
    if pid == 0:  # the child: never returns
        # Keep only stdio and our pipe: a pipe inherited from the parent (the App's engine
        # worker talks to the service over one) must close when the parent dies, not
        # stay open until this child ends.
        os.closerange(3, write_end)
        os.closerange(write_end + 1, _MAX_FD)
        _child(Connection(write_end, readable=False), model, matrix, codec, limits)
    os.close(write_end)  # the child holds the only writer now: its death reads as EOF here
    child = _Child(pid)
    receiver = Connection(read_end, writable=False)
    phase = "loading"
    try:
        deadline = time.monotonic() + limits.timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not receiver.poll(left):
                raise BudgetExceeded(f"exceeded the {limits.timeout_s:g} s limit while {phase}")
            try:
                message = receiver.recv()
            except EOFError:
                raise BudgetExceeded(_death(child.reap(), phase, limits)) from None
            if message[0] == "phase":
                phase = message[1]
                continue
            return _answer(message, phase=phase, limits=limits)
    finally:
        receiver.close()
        child.reap(kill=True)


class _Child:
    """A forked child's pid, reaped exactly once (a reaped pid may belong to another process)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exit_code: int | None = None
        self.reaped = False

    def reap(self, *, kill: bool = False) -> int | None:
        """Wait for the child (SIGKILLing it first if asked); return its exit code (-signal)."""
        if self.reaped:
            return self.exit_code
        if kill:
            # Safe before waitpid: an exited child stays a zombie, its pid not reused.
            os.kill(self.pid, signal.SIGKILL)
        _, status = os.waitpid(self.pid, 0)
        self.reaped = True
        self.exit_code = os.waitstatus_to_exitcode(status)
        return self.exit_code


def _answer(message: tuple[Any, ...], *, phase: str, limits: ScoringLimits) -> "np.ndarray":
    """Turn the child's final message into predictions or the matching error."""
    kind = message[0]
    if kind == "ok":
        predictions: np.ndarray = message[1]
        return predictions
    if kind == "memory":
        raise BudgetExceeded(f"exceeded {_mib(limits.max_memory_bytes)} while {phase}")
    if kind == "usage":
        raise UsageError(message[1])
    raise ModelRejected(message[1])


def _child(
    conn: Connection,
    model: "CheckedModel",
    matrix: "np.ndarray",
    codec: "np.ndarray | None",
    limits: ScoringLimits,
) -> NoReturn:
    """The forked child: cap itself, score, send back one final message and exit at once."""
    try:
        _score_and_reply(conn, model, matrix, codec, limits)
    finally:
        # Never return into the parent's code (its test runner, its event loop, its atexit).
        os._exit(0)


def _score_and_reply(
    conn: Connection,
    model: "CheckedModel",
    matrix: "np.ndarray",
    codec: "np.ndarray | None",
    limits: ScoringLimits,
) -> None:
    """Cap this process, score, and send back one final message."""
    from engine.scoring import score_model  # already imported by the parent when forked

    # Ctrl-C reaches the whole process group; the parent decides when the child stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reply: tuple[Any, ...]
    try:
        _cap(limits)
        predictions = score_model(
            model,
            matrix,
            codec=codec,
            limits=limits,
            on_phase=lambda phase: conn.send(("phase", phase)),
        )
        reply = ("ok", predictions)
    except MemoryError:
        reply = ("memory",)
    except ModelRejected as error:
        # The one-line message is cut short; onnxruntime's whole text is its context.
        text = f"{error} {error.__context__}"
        reply = ("memory",) if _OUT_OF_MEMORY.search(text) else ("rejected", str(error))
    except UsageError as error:
        reply = ("usage", str(error))
    except Exception as error:
        text = f"{type(error).__name__}: {error}"
        reply = ("memory",) if _OUT_OF_MEMORY.search(text) else ("rejected", text)
    _uncap()  # sending the reply must not fail for want of the memory just released
    conn.send(reply)
    conn.close()


def _cap(limits: ScoringLimits) -> None:
    """Cap this process's address space at its current size plus the budget, and its CPU time."""
    if resource is None:  # pragma: no cover
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = _address_space() + limits.max_memory_bytes
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
    _cpu_soft, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    # CPU time adds up over onnxruntime's threads: allow the wall time on each of them.
    threads = limits.intra_op_threads + limits.inter_op_threads - 1
    seconds = math.ceil(limits.timeout_s * threads) + _CPU_GRACE_S
    if cpu_hard == resource.RLIM_INFINITY or seconds + 1 <= cpu_hard:
        # SIGXCPU at the soft limit, SIGKILL at the hard one.
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))


def _uncap() -> None:
    """Lift the address-space cap back to the hard limit (always allowed)."""
    if resource is None:  # pragma: no cover
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def _address_space() -> int:
    """Return this process's virtual size in bytes (Linux ``/proc``; 0 where unknown)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * resource.getpagesize()


def _death(exitcode: int | None, phase: str, limits: ScoringLimits) -> str:
    """Describe a child that died without answering (under its cap, usually out of memory)."""
    if exitcode is not None and exitcode < 0:
        try:
            how = signal.Signals(-exitcode).name
        except ValueError:
            how = f"signal {-exitcode}"
    else:
        how = f"exit code {exitcode}"
    if exitcode == -signal.SIGXCPU:
        return f"exceeded the {limits.timeout_s:g} s limit while {phase}"
    return (
        f"the scoring process died ({how}) while {phase}, "
        f"within a {_mib(limits.max_memory_bytes)} budget"
    )


def _mib(n_bytes: int) -> str:
    """Render a budget in MiB ('1024 MiB')."""
    return f"{n_bytes / _MIB:g} MiB"
