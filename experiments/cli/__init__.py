"""The `modelramp` console script: one parser, subcommands registered by each package, one error mapping.

This package is the only place that imports all three packages. Each module here parses its
subcommand's arguments, calls the domain with typed values and prints; the domain modules import
lazily inside the handlers, so `modelramp router` never pays for TensorFlow and `--help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from experiments.cli import gate, live, local, problems, quality, scorecard, skew
from router import cli as router_cli
from serving import cli as serving_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelramp",
        description="Take a TensorFlow model live safely: gate, 1% experiment, ramp-up or rollback, skew monitors.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serving_cli.register(sub)
    router_cli.register(sub)
    for module in (live, skew, gate, local, problems, quality, scorecard):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Client libraries log every request at INFO: noise next to our own progress lines.
    for chatty in ("httpx", "httpcore", "kubernetes", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        if args.verbose:
            raise
        from serving.tfserving.errors import UserFacingError

        if isinstance(err, (UserFacingError, ValueError, OSError)):
            print(f"modelramp {args.command}: error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
