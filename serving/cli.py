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
    import ssl  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415

    from serving.legacy.app import build_legacy_app  # noqa: PLC0415
    from serving.ports import check_port_free  # noqa: PLC0415 - not serving.model_server: no TensorFlow here

    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_client_ca and not args.tls_cert):
        raise ValueError("--tls-cert and --tls-key go together (and --tls-client-ca needs them)")
    api_key = Path(args.api_key_file).read_text().strip() if args.api_key_file else None
    if args.api_key_file and not api_key:
        raise ValueError(f"--api-key-file {args.api_key_file} is empty")
    app = build_legacy_app(args.api, api_key, args.require_header)
    check_port_free(args.host, args.port)
    scheme = "https" if args.tls_cert else "http"
    print(f"modelramp legacy system ({args.api} API) on {scheme}://{args.host}:{args.port}", flush=True)
    tls = {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key} if args.tls_cert else {}
    if args.tls_client_ca:  # mutual TLS: only clients with a certificate this CA signed get in
        tls.update(ssl_ca_certs=args.tls_client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, **tls)
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
    p.add_argument("--api", choices=["v1", "foreign"], default="v1",
                   help="v1: modelramp's format (POST /v1/predict, GET /healthz); foreign: another shape of API "
                        "(POST /api/v2/score {\"customers\": [...]}, GET /status), to exercise the router's mappings (default: v1)")
    p.add_argument("--api-key-file", metavar="FILE", help="predict requires an X-Api-Key header equal to this file's content (401 otherwise)")
    p.add_argument("--require-header", action="append", default=[], metavar="NAME",
                   help="predict requires this header (401 otherwise); repeatable")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (chain)")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    p.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA (mutual TLS)")
    p.set_defaults(handler=_legacy)
