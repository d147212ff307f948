"""`ovnkube node ...`: the node agent's command line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from node.agent import Agent
from node.options import add_node_args, node_options
from ovnkube.config import ConfigError, add_common_args

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ovnkube node",
                                description="OVN node agent and CNI server")
    add_common_args(p)
    add_node_args(p)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    level = getattr(logging, str(args.loglevel).upper(), None)
    if not isinstance(level, int):
        print(f"ovnkube node: --loglevel {args.loglevel!r}: want debug, info, warning or error",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        opts = node_options(args)
    except ConfigError as e:
        print(f"ovnkube node: {e}", file=sys.stderr)
        return 2
    agent = Agent(opts)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return agent.run()
    except ConfigError as e:
        log.error("%s", e)
        return 2
    except InterruptedError:
        return 0
    except Exception:
        log.exception("ovnkube node failed")
        return 1
