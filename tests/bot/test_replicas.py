"""Several real ``model-guard serve`` processes on one store, under load, one killed mid-job.

Each test runs ``bench.soak.run_fleet``: the in-process GitHub sandbox with a few installed
repositories, service processes (``python -m bot``) on one fresh database, signed
deliveries spread over them (``/bisect`` commands, pushes to a registry pull request with
their ``synchronize``, plain comments), every replica's scheduler ticking twice a second.
The tests then read the end state a maintainer and an operator depend on from the store and
the sandbox. They poll for it (no sleeps), with generous deadlines.
"""

from pathlib import Path

import pytest

from bench.soak import FleetOutcome, FleetPlan, run_fleet
from bot.store import JobState
from tests.bot.store.conftest import postgres_url

# Real service processes for tens of seconds each: out of the quick run.
pytestmark = pytest.mark.slow


def assert_every_guarantee(outcome: FleetOutcome, *, failures_allowed: bool) -> None:
    """The end-state guarantees (``FleetOutcome.problems``) hold, listing every breach."""
    problems = outcome.problems(failures_allowed=failures_allowed)
    assert problems == [], "\n".join(problems)


async def test_three_replicas_on_postgres_one_killed_mid_job_finish_every_job_once(
    tmp_path: Path,
) -> None:
    plan = FleetPlan(
        store="postgres",
        postgres_url=postgres_url(),
        replicas=3,
        repos=10,
        deliveries=300,
        concurrency=8,
        faults=False,
        kill_one=True,
        drain_s=100.0,
    )
    outcome = await run_fleet(plan, tmp_path)

    assert outcome.sent == outcome.accepted == outcome.stored == 300
    assert_every_guarantee(outcome, failures_allowed=False)
    # Real work: the deliveries planned bisects and registry checks, and each repository
    # had its nightly; every job is done, none queued, running or failed.
    kinds = {job.kind for job in outcome.jobs}
    assert kinds == {"bisect", "registry", "nightly"}
    assert len(outcome.expected_keys) > 150
    assert outcome.counts == {JobState.DONE: len(outcome.jobs)}
    assert {key.split()[0] for key in outcome.nightlies} == set(outcome.repos)
    # The replica died holding a job; a survivor ran it again to its end, once.
    killed = outcome.killed
    assert killed is not None and killed.mid_job, killed
    (job,) = [j for j in outcome.jobs if j.key == killed.key]
    assert job.state is JobState.DONE and job.attempts == killed.attempt + 1


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_short_soak_with_github_failing_loses_and_repeats_nothing(
    tmp_path: Path, store: str
) -> None:
    plan = FleetPlan(
        store=store,
        postgres_url=postgres_url() if store == "postgres" else None,
        replicas=1 if store == "sqlite" else 2,
        seconds=12.0,
        rate=4.0,
        faults=True,
        drain_s=150.0,
    )
    outcome = await run_fleet(plan, tmp_path)

    assert outcome.accepted == outcome.sent > 0
    assert sum(outcome.faults_fired.values()) > 0, "no GitHub failure was injected"
    # Done, or failed with its reason; nothing lost, duplicated, left open or parked.
    assert_every_guarantee(outcome, failures_allowed=True)
    assert outcome.counts[JobState.DONE] > 0
