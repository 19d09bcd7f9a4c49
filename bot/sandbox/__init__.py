"""An in-process GitHub for tests and the demo: REST API, App auth, webhooks, failure injection."""

from bot.sandbox.faults import Faults
from bot.sandbox.server import RecordedRequest, Sandbox
from bot.sandbox.state import SandboxState

__all__ = ["Faults", "RecordedRequest", "Sandbox", "SandboxState"]
