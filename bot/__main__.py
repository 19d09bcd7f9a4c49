"""Run the webhook service as ``python -m bot``."""

from bot.cli import serve_main

raise SystemExit(serve_main())
