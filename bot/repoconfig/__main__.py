"""Run ``python -m bot.repoconfig --docs`` or ``--check FILE`` (see ``bot.repoconfig.cli``)."""

from bot.repoconfig.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
