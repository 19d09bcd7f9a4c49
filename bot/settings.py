"""Service settings, read from the environment once, when the app is assembled (never at import)."""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from bot.errors import SettingsError
from bot.github.policy import ClientPolicy
from bot.jobs.worker import RequeueMode, WorkerOptions
from bot.store.select import is_postgres_url, sqlite_path
from engine.budget import DEFAULT_MEMORY_MIB, DEFAULT_TIMEOUT_S, ScoringLimits

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_PORT = 3000
# GitHub caps webhook payloads at 25 MB; anything larger is not from GitHub.
DEFAULT_MAX_BODY_BYTES = 25 * 1024 * 1024
# GitHub gives up on a delivery after 10 seconds, so a body still arriving then is not one
# GitHub is waiting on.
DEFAULT_BODY_TIMEOUT_S = 10.0
# Bodies read at once before their signature can be checked; more get 503 at once.
DEFAULT_MAX_PENDING_BODIES = 8


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to run; secrets are kept out of ``repr``."""

    webhook_secret: str = field(repr=False)
    app_id: str | None = None
    private_key: str | None = field(default=None, repr=False)
    api_url: str = DEFAULT_API_URL
    # A SQLite file, or a postgresql:// URL (str; it may hold a password: kept out of repr).
    database: Path | str = field(default=Path("model-guard.sqlite3"), repr=False)
    database_pool: int = 10
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    workers: int = 2
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_pending_bodies: int = DEFAULT_MAX_PENDING_BODIES
    job_timeout_s: float = 900.0
    lease_s: float = 120.0
    poll_s: float = 1.0
    resume_s: float = 60.0
    sweep_s: float = 900.0
    schedule_s: float = 60.0
    requeue_on_start: RequeueMode = RequeueMode.EXPIRED
    engine_processes: int = 1
    data_dir: Path = Path("model-guard-data")
    model_memory_mib: int = DEFAULT_MEMORY_MIB
    model_timeout_s: float = DEFAULT_TIMEOUT_S
    # How many replicas share the App's GitHub limits (MODEL_GUARD_REPLICAS).
    replicas: int = 1

    def github_policy(self, base: ClientPolicy | None = None) -> ClientPolicy:
        """The GitHub client's policy, each replica pacing its share of the App's writes.

        GitHub counts an installation's content-creating requests together, whichever
        replica sends them, while each replica's pacer sees only its own; so N replicas
        each pace 1/N of the budget (rounded down) and together stay under it.
        """
        policy = base if base is not None else ClientPolicy()
        return replace(
            policy,
            writes_per_minute=max(1, policy.writes_per_minute // self.replicas),
            writes_per_hour=max(1, policy.writes_per_hour // self.replicas),
        )

    def scoring_limits(self) -> ScoringLimits:
        """Return the engine's limits for one model: the memory and time budget set here."""
        return ScoringLimits(
            max_memory_bytes=self.model_memory_mib * 1024 * 1024, timeout_s=self.model_timeout_s
        )

    def worker_options(self) -> WorkerOptions:
        """Return the worker pool's options: worker count, lease, poll and start-up requeue."""
        return WorkerOptions(
            workers=self.workers,
            lease_seconds=self.lease_s,
            poll_seconds=self.poll_s,
            requeue_on_start=self.requeue_on_start,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read settings from the environment; refuse to start without a webhook secret."""
        env = os.environ if environ is None else environ
        secret = env.get("GITHUB_WEBHOOK_SECRET", "")
        if not secret:
            raise SettingsError(
                "GITHUB_WEBHOOK_SECRET is required: without it webhook signatures cannot be checked"
            )
        private_key = env.get("GITHUB_PRIVATE_KEY") or None
        key_source = "GITHUB_PRIVATE_KEY"
        key_path = env.get("GITHUB_PRIVATE_KEY_PATH")
        if private_key is None and key_path:
            key_source = f"GITHUB_PRIVATE_KEY_PATH {key_path}"
            try:
                private_key = Path(key_path).read_text(encoding="utf-8")
            except OSError as error:
                raise SettingsError(f"{key_source}: {error.strerror or error}") from None
        if private_key is not None:
            _check_private_key(private_key, source=key_source)
        database = env.get("MODEL_GUARD_DB", "model-guard.sqlite3")
        return cls(
            webhook_secret=secret,
            app_id=env.get("GITHUB_APP_ID") or None,
            private_key=private_key,
            api_url=env.get("GITHUB_API_URL", DEFAULT_API_URL).rstrip("/"),
            database=database if is_postgres_url(database) else sqlite_path(database),
            database_pool=_integer(env, "MODEL_GUARD_DB_POOL", 10, low=1, high=1000),
            host=env.get("HOST", "0.0.0.0"),
            port=_integer(env, "PORT", DEFAULT_PORT, low=1, high=65535),
            workers=_integer(env, "MODEL_GUARD_WORKERS", 2, low=1, high=64),
            max_body_bytes=_integer(
                env, "MODEL_GUARD_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, low=1024, high=1 << 30
            ),
            body_timeout_s=_number(
                env, "MODEL_GUARD_BODY_TIMEOUT_S", DEFAULT_BODY_TIMEOUT_S, low=0.05, high=600.0
            ),
            max_pending_bodies=_integer(
                env, "MODEL_GUARD_MAX_PENDING_BODIES", DEFAULT_MAX_PENDING_BODIES, low=1, high=1024
            ),
            job_timeout_s=float(
                _integer(env, "MODEL_GUARD_JOB_TIMEOUT_S", 900, low=1, high=86_400)
            ),
            # A lease shorter than a few seconds would lapse between heartbeats on a busy host.
            lease_s=_number(env, "MODEL_GUARD_LEASE_S", 120.0, low=3.0, high=86_400.0),
            poll_s=_number(env, "MODEL_GUARD_POLL_S", 1.0, low=0.01, high=3600.0),
            resume_s=_number(env, "MODEL_GUARD_RESUME_S", 60.0, low=0.05, high=86_400.0),
            # How often one replica asks GitHub to redeliver deliveries that failed while down.
            sweep_s=_number(env, "MODEL_GUARD_SWEEP_S", 900.0, low=1.0, high=86_400.0),
            # How often the scheduler looks for due nightly runs (each is claimed once a day).
            schedule_s=_number(env, "MODEL_GUARD_SCHEDULE_S", 60.0, low=0.05, high=86_400.0),
            requeue_on_start=_requeue_mode(env),
            engine_processes=_integer(env, "MODEL_GUARD_ENGINE_PROCESSES", 1, low=1, high=64),
            # Blob cache, evaluation store and the jobs' working copies of repositories.
            data_dir=Path(env.get("MODEL_GUARD_DATA") or "model-guard-data"),
            # One model's budget: over it the model is a broken step, the bisect goes on.
            model_memory_mib=_integer(
                env, "MODEL_GUARD_MODEL_MEMORY_MIB", DEFAULT_MEMORY_MIB, low=16, high=1 << 20
            ),
            model_timeout_s=_number(
                env, "MODEL_GUARD_MODEL_TIMEOUT_S", DEFAULT_TIMEOUT_S, low=0.1, high=86_400.0
            ),
            replicas=_integer(env, "MODEL_GUARD_REPLICAS", 1, low=1, high=64),
        )


def _check_private_key(pem: str, *, source: str) -> None:
    """Refuse a malformed App key at start-up, naming the variable it came from (never the key)."""
    from bot.github.credentials import load_private_key
    from bot.github.errors import GitHubClientError

    try:
        load_private_key(pem)
    except GitHubClientError as error:
        raise SettingsError(f"{source}: {error}") from None


def _integer(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    """Read an integer setting within bounds, naming the variable when it is wrong."""
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, not {text!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _number(env: Mapping[str, str], name: str, default: float, *, low: float, high: float) -> float:
    """Read a decimal setting within bounds, naming the variable when it is wrong."""
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {text!r}") from None
    if not low <= value <= high:  # also refuses nan
        raise SettingsError(f"{name} must be between {low:g} and {high:g}, not {text}")
    return value


def _requeue_mode(env: Mapping[str, str]) -> RequeueMode:
    """Read MODEL_GUARD_REQUEUE_ON_START: ``expired`` (safe with replicas) or ``all``."""
    text = env.get("MODEL_GUARD_REQUEUE_ON_START") or RequeueMode.EXPIRED.value
    try:
        return RequeueMode(text.strip().lower())
    except ValueError:
        choices = "|".join(mode.value for mode in RequeueMode)
        raise SettingsError(
            f"MODEL_GUARD_REQUEUE_ON_START must be {choices}, not {text!r}"
        ) from None
