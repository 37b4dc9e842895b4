"""``python -m falconer_assets.metamodel build|path``: build or locate the metamodel base.

``build`` pre-trains the default recipe (see :mod:`falconer_assets.metamodel.pretrain`)
into the cache unless it is already there; ``--quick`` uses the minutes-long test recipe,
``--force`` rebuilds, ``--out DIR`` writes elsewhere. ``path`` prints the cache directory of
the default recipe and exits 1 when it is not built yet.
"""

from __future__ import annotations

import argparse
import os
import sys

from falconer_assets.metamodel.pretrain import (
    DEFAULT_RECIPE,
    QUICK_RECIPE,
    build_metamodel,
    is_built,
    metamodel_dir,
)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="python -m falconer_assets.metamodel", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="pre-train the metamodel base (cached)")
    b.add_argument("--quick", action="store_true", help="tiny recipe for tests (minutes)")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.add_argument("--out", default=None, help="output directory (default: the cache)")
    b.add_argument("--device", default="auto")
    sub.add_parser("path", help="print the default metamodel directory")
    args = parser.parse_args(argv)
    if args.cmd == "path":
        path = metamodel_dir(DEFAULT_RECIPE)
        print(path)
        return 0 if is_built(path) else 1
    recipe = QUICK_RECIPE if args.quick else DEFAULT_RECIPE
    path = build_metamodel(recipe, out=args.out, force=args.force, device=args.device)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
