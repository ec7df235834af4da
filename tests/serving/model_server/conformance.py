"""Where the conformance tests point: the local model server, or a real TF Serving by address.

Set MODELRAMP_CONFORMANCE_GRPC=host:port and MODELRAMP_CONFORMANCE_REST=http://host:port to run
the same tests against the official `tensorflow_model_server` serving the same model folder.
"""

import os

GRPC_ENV = "MODELRAMP_CONFORMANCE_GRPC"
REST_ENV = "MODELRAMP_CONFORMANCE_REST"


def external_target() -> tuple[str, str] | None:
    grpc_target, rest_url = os.environ.get(GRPC_ENV), os.environ.get(REST_ENV)
    return (grpc_target, rest_url) if grpc_target and rest_url else None
