"""The job kinds: one gidgethub Router per concern and one runner per kind, registered here.

A new job kind adds its module beside ``nightly`` (a ``JobKind`` on the run skeleton in
``bot.handlers.run``, its view, its router) and one line in each of ``ROUTERS``,
``HANDLED_EVENTS`` and ``job_handlers``; see docs/app-architecture.md.
"""

from gidgethub import routing

from bot.github.repofiles import RepoFiles
from bot.handlers import bisect, nightly, registry
from bot.handlers.run import RunServices
from bot.jobs.worker import JobHandler
from bot.judging.bisect_run import TimelineJudge
from bot.judging.registry_run import RegistryChangeJudge

ROUTERS: tuple[routing.Router, ...] = (nightly.router, registry.router, bisect.router)
# Sent to every App without a subscription (so not in app.yml's default_events):
# https://docs.github.com/webhooks/webhook-events-and-payloads#installation
ALWAYS_SENT_EVENTS: frozenset[str] = frozenset({"installation", "installation_repositories"})
# The webhook events some router plans jobs for; app.yml subscribes to these but the
# always-sent ones.
HANDLED_EVENTS: frozenset[str] = (
    frozenset({"check_run", "check_suite", "issue_comment", "pull_request"}) | ALWAYS_SENT_EVENTS
)
# The kind the per-repository cron schedules.
SCHEDULED_KIND = nightly.KIND


def job_handlers(
    runs: RunServices, *, files: RepoFiles, judge: TimelineJudge, change: RegistryChangeJudge
) -> dict[str, JobHandler]:
    """The worker's handler for each job kind: every kind is a runner on the shared services."""
    return {
        nightly.KIND: nightly.nightly_runner(runs, files=files, timeline=judge),
        registry.KIND: registry.registry_runner(runs, files=files, change=change),
        bisect.KIND: bisect.bisect_runner(runs, files=files, timeline=judge),
    }
