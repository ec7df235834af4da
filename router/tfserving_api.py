"""TF Serving's API beyond Predict, through the router: model status forwarded to the model arm, the rest refused by name.

Both fronts share this: `GET /v1/models/{name}[/versions/{v}|/labels/{l}]` and
`ModelService/GetModelStatus` are the model arm's backend's own answer (only the name is the
router's), so a client or tool that waits for `AVAILABLE` sees what TF Serving says. Classify,
Regress and MultiInference are not served: the experiment splits Predict between the legacy
system and the model, and the legacy system has no such methods, so a request there could only
go to the model, outside the experiment and its counts. They are answered UNIMPLEMENTED (gRPC)
or 501 (REST) with a message naming what is served, never forwarded.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from router.core import MODEL, Router
from serving.tfserving import errors

SERVED_GRPC = ("tensorflow.serving.PredictionService/Predict", "tensorflow.serving.PredictionService/GetModelMetadata",
               "tensorflow.serving.ModelService/GetModelStatus", "grpc.health.v1.Health", "server reflection")
SERVED_REST = ("POST /v1/models/{name}:predict", "GET /v1/models/{name}", "GET /v1/models/{name}/metadata")
# PredictionService methods without a legacy counterpart (see the module docstring).
REFUSED_GRPC = ("Classify", "Regress", "MultiInference")


def not_served(what: str, rest: bool) -> errors.Unimplemented:
    """The answer to a TF Serving method or route the router does not serve, naming those it does."""
    served = SERVED_REST if rest else SERVED_GRPC
    return errors.Unimplemented(f"{what} is not served by this router: it splits Predict traffic between the legacy system and "
                                f"the model, and the legacy system answers Predict only. Served: {', '.join(served)}")


def reload_refused() -> errors.Unimplemented:
    """ModelService/HandleReloadConfigRequest: the model server's configuration is not the router's to change."""
    return errors.Unimplemented("tensorflow.serving.ModelService/HandleReloadConfigRequest is not served by this router: "
                                "reload the model server's configuration on the model server itself")


async def model_status(router: Router, name: str, version: int | None, label: str | None, timeout: float) -> Any:
    """The model arm's GetModelStatusResponse for `name` (the router's model name) at `version` or `label`.

    Raises NotFound for another model's name, and the backend's own error (NotFound for an
    unknown version, Unavailable when the model server is down) otherwise.
    """
    cfg = router.state.config
    if name != cfg.model_name:
        raise errors.NotFound(f"unknown model {name!r}; this router serves {cfg.model_name!r}")
    if version is not None and label is not None:
        raise errors.InvalidArgument("give a model version or a version label, not both")
    return await router.state.backends[MODEL].model_status(version, label, timeout)


def status_json(response: Any) -> dict[str, Any]:
    """A GetModelStatusResponse as TF Serving's REST API writes it (protobuf's JSON mapping, field names as in the proto)."""
    document: dict[str, Any] = json_format.MessageToDict(response, preserving_proto_field_name=True,
                                                         always_print_fields_with_no_presence=True)
    return document
