"""The ``model-guard`` console script: the engine's commands plus the App's ``serve``."""

import argparse
import errno
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.cli import main as engine_main
from engine.commands.arguments import whole_number_in
from engine.errors import UsageError


def add_app_commands(commands: Any) -> None:
    """Add ``serve`` to the engine's command parser."""
    serve = commands.add_parser("serve", help="run the GitHub App webhook service")
    serve.add_argument("--host", help="address to listen on (default HOST or 0.0.0.0)")
    serve.add_argument("--port", type=whole_number_in(1, 65535), help="port (default PORT or 3000)")
    serve.set_defaults(run=run_serve)
    demo = commands.add_parser(
        "demo",
        help="run the App's nightly job against a local GitHub sandbox (no account needed)",
    )
    demo.add_argument("--registry", type=Path, help="registry.json to install (default: bundled)")
    demo.add_argument("--features", type=Path, help="golden feature cache (default: bundled)")
    demo.set_defaults(run=run_demo)


def run_serve(args: argparse.Namespace) -> int:
    """Start the webhook service until interrupted."""
    from dataclasses import replace

    from bot.errors import SettingsError
    from bot.settings import Settings

    try:
        settings = Settings.from_env()
    except SettingsError as error:
        raise UsageError(str(error)) from None
    # Imported once the settings are known good: the app pulls in the engine (numpy,
    # onnxruntime), seconds of start-up a refused start should not pay.
    from aiohttp import web

    from bot.app import create_app
    from bot.logs import configure_logging

    if args.host:
        settings = replace(settings, host=args.host)
    if args.port:
        settings = replace(settings, port=args.port)
    configure_logging()
    try:
        # No access log: the ingress logs every delivery once, with its id, event and outcome,
        # and every refusal; a second line per request cost about 6 % of its time.
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            print=None,
            access_log=None,
        )
    except OSError as error:
        if error.errno not in _LISTEN_ERRORS:
            raise
        reason = error.strerror or str(error)
        raise UsageError(f"cannot listen on {settings.host}:{settings.port}: {reason}") from None
    return 0


# The port is taken, or the address is not this host's, or binding it needs privileges.
_LISTEN_ERRORS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


# What the demo needs beyond the service: the sandbox package and the `demo` extra's modules.
_DEMO_MODULES = frozenset({"sandbox", "openapi_schema_validator"})


def run_demo(args: argparse.Namespace) -> int:
    """Start the sandbox and the App on loopback, fire the nightly job, show the result."""
    # Imported here, not at the top: the service image has neither the sandbox nor its
    # dependencies, and `serve` must not need them.
    try:
        from bot.demo import main_demo
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] not in _DEMO_MODULES:
            raise
        raise UsageError(
            f"the demo needs the local GitHub sandbox, and this install has no {error.name!r}: "
            "install the demo extra, pip install 'model-guard[demo]' (in a checkout: -e '.[demo]')"
        ) from None
    return main_demo(registry=args.registry, features=args.features)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a model-guard command (engine or App)."""
    return engine_main(argv, extend=add_app_commands)


def serve_main() -> int:
    """Entry point of ``python -m bot``: the webhook service."""
    return main(["serve"])
