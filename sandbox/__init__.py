"""An in-process GitHub for tests and the demo: REST API, App auth, webhooks, failure injection."""

from sandbox.faults import Faults
from sandbox.server import RecordedRequest, Sandbox
from sandbox.state import SandboxState

__all__ = ["Faults", "RecordedRequest", "Sandbox", "SandboxState"]
