"""`--model_config_file`: TF Serving's ModelServerConfig in protobuf text format, parsed and written.

Parsed with the official `model_server_config.proto`, so a file written for TF Serving (several
models, version policies, version labels) works unchanged here and vice versa. `render_model_config`
is the one place that writes such a file (the local stack, the gate's --start-server, the tests);
it needs no TensorFlow, so the processes that only start a model server never load it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import text_format

from serving.tfserving.errors import InvalidArgument

if TYPE_CHECKING:
    from serving.model_server.registry import ModelSource


def render_model_config(name: str, base_path: Path, versions: Sequence[int] | str = "all",
                        labels: Mapping[str, int] | None = None) -> str:
    """One model's ModelServerConfig text: `versions` is "all", "latest" or the versions to serve."""
    if versions == "all":
        policy = "all {}"
    elif versions == "latest":
        policy = "latest { num_versions: 1 }"
    elif isinstance(versions, str) or not versions:
        raise InvalidArgument(f'versions must be "all", "latest" or a list of versions, got {versions!r}')
    else:
        policy = "specific { " + " ".join(f"versions: {int(v)}" for v in versions) + " }"
    # json.dumps quotes like a proto text string (backslashes and quotes escaped).
    lines = ["model_config_list {", "  config {", f"    name: {json.dumps(name)}",
             f"    base_path: {json.dumps(str(base_path))}", '    model_platform: "tensorflow"',
             f"    model_version_policy {{ {policy} }}"]
    lines += [f"    version_labels {{ key: {json.dumps(k)} value: {int(v)} }}" for k, v in (labels or {}).items()]
    return "\n".join([*lines, "  }", "}", ""])


def parse_model_config(text: str, relative_to: Path | None = None) -> list[ModelSource]:
    """ModelSources from a ModelServerConfig text proto; InvalidArgument on any problem."""
    from tensorflow_serving.config import model_server_config_pb2  # noqa: PLC0415 - needs TF; the server has it

    from serving.model_server.registry import ModelSource  # noqa: PLC0415 - loads TensorFlow

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise InvalidArgument(f"model config file is not a valid ModelServerConfig: {err}") from None
    if not config.HasField("model_config_list"):
        raise InvalidArgument("model config file must contain model_config_list (custom_model_config is not supported)")
    sources = []
    for entry in config.model_config_list.config:
        if not entry.name or not entry.base_path:
            raise InvalidArgument("every config entry needs a name and a base_path")
        if entry.model_platform not in ("", "tensorflow"):
            raise InvalidArgument(f"model {entry.name}: model_platform {entry.model_platform!r} is not supported")
        base = Path(entry.base_path)
        if not base.is_absolute() and relative_to is not None:
            base = relative_to / base
        policy = entry.model_version_policy.WhichOneof("policy_choice") or "latest"
        latest = entry.model_version_policy.latest.num_versions or 1
        specific = tuple(entry.model_version_policy.specific.versions)
        if policy == "specific" and not specific:
            raise InvalidArgument(f"model {entry.name}: a specific version policy needs at least one version")
        labels = dict(entry.version_labels)
        if policy == "specific":
            stray = {k: v for k, v in labels.items() if v not in specific}
            if stray:
                raise InvalidArgument(f"model {entry.name}: version labels {stray} point at versions the policy does not serve")
        sources.append(ModelSource(entry.name, base, policy, latest, specific, labels))
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"model names must be unique, got {names}")
    if not sources:
        raise InvalidArgument("model config file lists no models")
    return sources


def load_model_config(path: str | Path) -> list[ModelSource]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise InvalidArgument(f"cannot read model config file {path}: {err.strerror}") from None
    return parse_model_config(text, relative_to=path.resolve().parent)
