"""One entry point for the benchmarks: ``python -m bench NAME [ARGS...]`` runs ``python -m bench.NAME``.

``python -m bench`` alone lists the names. Each benchmark keeps its own module and options.
"""

import runpy
import sys
from pathlib import Path

NAMES = sorted(
    path.stem
    for path in Path(__file__).resolve().parent.glob("*.py")
    if not path.stem.startswith("_")
)


def main() -> int:
    """Run the benchmark named by the first argument with the rest as its arguments."""
    if len(sys.argv) < 2 or sys.argv[1] in {"-h", "--help"}:
        print(f"usage: python -m bench NAME [ARGS...]; NAME is one of: {', '.join(NAMES)}")
        return 0 if len(sys.argv) >= 2 else 2
    name = sys.argv[1]
    if name not in NAMES:
        print(f"no benchmark {name!r}; one of: {', '.join(NAMES)}", file=sys.stderr)
        return 2
    sys.argv = [f"bench.{name}", *sys.argv[2:]]
    runpy.run_module(f"bench.{name}", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
