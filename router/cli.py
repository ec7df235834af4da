"""Subcommands owned by the router package: `router` and `up`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ADMIN_TOKEN_ENV = "MODELRAMP_WEIGHTS_TOKEN"


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `modelramp` parser."""
    p = sub.add_parser("router", help="the traffic splitter (HTTP and gRPC fronts, one process = one replica)",
                       description="Serve TF Serving's REST and gRPC APIs and split traffic between the legacy system and the model.")
    p.add_argument("--config", type=Path, default=None, help="experiment YAML (default: the example shipped in the package); watched for changes")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--http-port", type=int, default=8080, help="HTTP port (default 8080)")
    p.add_argument("--grpc-port", type=int, default=8090, help="gRPC port (default 8090)")
    p.add_argument("--legacy-url", default=None, help="override the legacy backend URL of the config")
    p.add_argument("--model-target", default=None, help="override the model backend address of the config (host:port for gRPC, URL for REST)")
    p.add_argument("--signing-key-file", type=Path, default=None, help="HMAC key for request ids (else $MODELRAMP_SIGNING_KEY; all replicas must share it)")
    p.add_argument("--admin-token-file", type=Path, default=None, help=f"bearer token for PUT .../weights (else ${ADMIN_TOKEN_ENV}; none: the API is off)")
    p.add_argument("--watch-interval", type=float, default=1.0, help="seconds between looks at the config file (default 1)")
    p.add_argument("--baseline", type=Path, default=None, help="feature baseline (models/<name>/<version>/modelramp/baseline.json) for the skew monitors; overrides the config's skew.baseline")
    p.set_defaults(handler=_router)

    u = sub.add_parser("up", help="the whole local stack: model server, legacy system and router, in the foreground",
                       description="Start the model server, the legacy system and the router on the ARCHITECTURE.md ports; Ctrl-C stops all.")
    u.add_argument("--config", type=Path, default=None, help="experiment YAML (default: the example shipped in the package)")
    u.add_argument("--models", type=Path, default=Path("models"), help="directory with the exported models (default models/)")
    u.add_argument("--host", default="127.0.0.1", help="address every process listens on (default 127.0.0.1)")
    u.add_argument("--model-port", type=int, default=8500, help="model server gRPC port (default 8500)")
    u.add_argument("--model-rest-port", type=int, default=8501, help="model server REST port (default 8501)")
    u.add_argument("--legacy-port", type=int, default=8081, help="legacy system port (default 8081)")
    u.add_argument("--router-port", type=int, default=8080, help="router HTTP port (default 8080)")
    u.add_argument("--router-grpc-port", type=int, default=8090, help="router gRPC port (default 8090)")
    u.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each process to be ready (default 180)")
    u.add_argument("--prometheus-port", type=int, default=9090, help="Prometheus port, when its binary is on the PATH (default 9090)")
    u.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus even if it is installed")
    u.add_argument("--ramp-interval", type=float, default=0.0,
                   help="run the ramp controller every S seconds against the local stack (default 0: off)")
    u.set_defaults(handler=_up)


def _admin_token(path: Path | None) -> str | None:
    if path is not None:
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"admin token file {path} is empty")
        return token
    return os.environ.get(ADMIN_TOKEN_ENV) or None


def _router(args: argparse.Namespace) -> int:
    from serving.grpc_stack import prefer_iomgr_stack

    prefer_iomgr_stack()  # before grpc is imported (below)
    from experiments.config import EXAMPLE_CONFIG
    from router.ports import require_free
    from router.server import RouterSettings, run

    settings = RouterSettings(
        config=args.config or EXAMPLE_CONFIG, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        legacy_url=args.legacy_url, model_target=args.model_target, signing_key_file=args.signing_key_file,
        admin_token_file=args.admin_token_file, watch_interval=args.watch_interval,
        baseline=args.baseline)
    require_free({"router HTTP (--http-port)": args.http_port, "router gRPC (--grpc-port)": args.grpc_port}, args.host)
    return run(settings, _admin_token(args.admin_token_file))


def _up(args: argparse.Namespace) -> int:
    from router.up import run_stack

    return run_stack(args)
