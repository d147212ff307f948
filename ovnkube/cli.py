"""`ovnkube`: the master and the node agent in one command."""

from __future__ import annotations

import argparse
import importlib
import sys

from ovnkube import __version__

# Each role lives in its own package; import it only when asked for, so the
# node agent never loads master code (and the other way round).
ROLES = {
    "master": "ovnkube.master.main",
    "node": "node.main",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="ovnkube", add_help=True)
    p.add_argument("role", choices=[*ROLES, "version"])
    args, rest = p.parse_known_args(argv[:1])
    if args.role == "version":
        print(f"ovnkube {__version__}")
        return 0
    try:
        module = importlib.import_module(ROLES[args.role])
    except ModuleNotFoundError as e:
        print(f"ovnkube: role {args.role!r} is not available: {e}", file=sys.stderr)
        return 2
    return int(module.main(argv[1:] + rest))


if __name__ == "__main__":
    sys.exit(main())
