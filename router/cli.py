"""`modelramp router`: one router replica, the only subcommand the router package owns."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from router.ledger import DEFAULT_LEDGER, LEDGER_ENV

ADMIN_TOKEN_ENV = "MODELRAMP_WEIGHTS_TOKEN"
WEIGHTS_FILE_ENV = "MODELRAMP_WEIGHTS_FILE"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's subcommands to the `modelramp` parser."""
    p = sub.add_parser("router", help="the traffic splitter (HTTP and gRPC fronts, one process = one replica)",
                       description="Serve TF Serving's REST and gRPC APIs and split traffic between the legacy system and the model.")
    p.add_argument("--config", type=Path, required=True, help="experiment YAML, watched for changes (`modelramp up` and `modelramp demo` pass "
                                                              "their own)")
    p.add_argument("--weights", type=Path, default=None, metavar="FILE",
                   help=f"weights file {{experiment, salt?, weights}}, watched; overrides the config's weights while it names the "
                        f"config's experiment (else ${WEIGHTS_FILE_ENV}; absent: the config's weights). On Kubernetes the "
                        "ramp controller's weights ConfigMap, which no Helm upgrade or GitOps sync overwrites")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--http-port", type=int, default=8080, help="HTTP port (default 8080)")
    p.add_argument("--grpc-port", type=int, default=8090, help="gRPC port (default 8090)")
    p.add_argument("--legacy-url", default=None, help="override the legacy backend URL of the config")
    p.add_argument("--model-target", default=None, help="override the model backend address of the config (host:port for gRPC, URL for REST)")
    p.add_argument("--signing-key-file", type=Path, default=None, help="HMAC key for request ids (else $MODELRAMP_SIGNING_KEY; all replicas "
                                                                       "must share it)")
    p.add_argument("--admin-token-file", type=Path, default=None,
                   help=f"bearer token for PUT .../weights (else ${ADMIN_TOKEN_ENV}; none: the API is off)")
    p.add_argument("--watch-interval", type=float, default=1.0, help="seconds between looks at the config file (default 1)")
    p.add_argument("--baseline", type=Path, default=None, help="feature baseline (models/<name>/<version>/modelramp/baseline.json) for the "
                                                               "skew monitors; overrides the config's skew.baseline")
    p.add_argument("--outcome-ledger", default=None, metavar="URL",
                   help=f"where outcomes are recorded once across replicas and restarts: sqlite:///file.db (one router) or "
                        f"postgresql://user@host/db (every replica of a deployment) (else ${LEDGER_ENV}, else {DEFAULT_LEDGER} in "
                        "the working folder). A SQLite file must not be shared by several replicas on different hosts")
    p.set_defaults(handler=_router)



def _admin_token(path: Path | None) -> str | None:
    if path is not None:
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"admin token file {path} is empty")
        return token
    return os.environ.get(ADMIN_TOKEN_ENV) or None


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _router(args: argparse.Namespace) -> int:
    from serving.tfserving.grpc_stack import prefer_iomgr_stack

    prefer_iomgr_stack()  # before grpc is imported (below)
    from router.ports import require_free
    from router.server import RouterSettings, run

    settings = RouterSettings(
        config=args.config, weights=args.weights or _env_path(WEIGHTS_FILE_ENV), host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        legacy_url=args.legacy_url, model_target=args.model_target, signing_key_file=args.signing_key_file,
        admin_token_file=args.admin_token_file, watch_interval=args.watch_interval,
        baseline=args.baseline, outcome_ledger=args.outcome_ledger or os.environ.get(LEDGER_ENV) or DEFAULT_LEDGER)
    require_free({"router HTTP (--http-port)": args.http_port, "router gRPC (--grpc-port)": args.grpc_port}, args.host)
    return run(settings, _admin_token(args.admin_token_file))

