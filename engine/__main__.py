"""Run the model-guard command line as ``python -m engine``."""

from engine.cli import main

raise SystemExit(main())
