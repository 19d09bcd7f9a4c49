"""The App's event handlers: one gidgethub Router per concern, merged where the app is assembled."""

from gidgethub import routing

from bot.handlers import nightly

ROUTERS: tuple[routing.Router, ...] = (nightly.router,)
# The webhook events some router plans jobs for; app.yml subscribes to exactly these.
HANDLED_EVENTS: frozenset[str] = frozenset({"check_run"})
