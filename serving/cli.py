"""Subcommands owned by the serving package: `train`, `serve-model`, `legacy`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Coroutine
from typing import Any


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) hides our own output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _train(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from serving.training import train  # noqa: PLC0415

    if args.all_versions:
        train.train_all_versions(args.out, seed=args.seed)
    else:
        recipe = train.RECIPES[args.recipe] if args.recipe else None
        train.train(args.out, args.version, seed=args.seed, recipe=recipe)
    return 0


def _serve_model(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    import asyncio  # noqa: PLC0415

    from serving.tfserving.grpc_stack import prefer_iomgr_stack  # noqa: PLC0415

    prefer_iomgr_stack()  # before grpc is imported (below)
    from serving.model_server import server as model_server  # noqa: PLC0415
    from serving.model_server.servable import session_config  # noqa: PLC0415

    config = session_config(args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism)
    sources = model_server.sources_from_flags(args.model_name, args.model_base_path, args.model_config_file)
    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:  # uvloop's event loop costs less per request than asyncio's (both fronts share the loop)
        import uvloop  # noqa: PLC0415

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        runner = asyncio.run
    runner(model_server.serve(sources, args.port, args.rest_api_port, args.file_system_poll_wait_seconds, args.host, config))
    return 0


def _legacy(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415

    from serving.legacy.app import build_legacy_app  # noqa: PLC0415
    from serving.model_server.server import check_port_free  # noqa: PLC0415

    check_port_free(args.host, args.port)
    print(f"modelramp legacy system on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(build_legacy_app(), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's subcommands to the `modelramp` parser."""
    p = sub.add_parser("train", help="train a candidate model and export a SavedModel version")
    p.add_argument("--out", default="models", help="base folder; the model goes to OUT/churn/<version>/ (default: models)")
    p.add_argument("--version", type=int, default=2, help="version number to export (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="training seed; the same seed gives the same model")
    p.add_argument("--recipe", type=int, choices=[1, 2], help="candidate recipe (default: the one of --version)")
    p.add_argument("--all-versions", action="store_true", help="train every recipe as versions 1, 2, ...")
    p.set_defaults(handler=_train)

    p = sub.add_parser("serve-model", help="TF-Serving-compatible model server (gRPC and REST)")
    p.add_argument("--port", type=int, default=8500, help="gRPC port (default: 8500)")
    p.add_argument("--rest_api_port", type=int, default=8501, help="REST port, 0 to disable (default: 8501)")
    p.add_argument("--model_name", default=None, help="name of the model served from --model_base_path")
    p.add_argument("--model_base_path", default=None, help="folder holding numeric version folders")
    p.add_argument("--model_config_file", default=None, help="ModelServerConfig text proto (several models, policies, labels)")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                   help="how often to look for new versions; 0 disables polling (default: 1)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    # TF Serving's flags and default (0: TensorFlow sizes its pools), set on each model's session.
    # One thread each can suit one-row requests on a small machine; on this 2-core one the effect
    # on gRPC latency was within the noise (loadtests/bench_model_server.py --tf-threads 1 against 0).
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0, metavar="N",
                   help="threads inside one op (default 0: TensorFlow chooses)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0, metavar="N",
                   help="ops run at once (default 0: TensorFlow chooses)")
    p.set_defaults(handler=_serve_model)

    p = sub.add_parser("legacy", help="the legacy system (rule-based churn predictor) over HTTP")
    p.add_argument("--port", type=int, default=8081, help="HTTP port (default: 8081)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    p.set_defaults(handler=_legacy)
