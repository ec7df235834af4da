"""Regenerate `tfserving.binpb`: TF Serving's proto descriptors, taken from the official package.

Run by hand when `tensorflow-serving-api` is upgraded:
    python -m serving.tfserving.protos.build_descriptors
It imports the official `tensorflow_serving.apis` modules (and so all of TensorFlow), collects the
file descriptors of the services modelramp speaks and everything they depend on, and writes them
as one serialized FileDescriptorSet. At run time `serving.tfserving.protos` loads that file into a private
descriptor pool, so routers and clients speak the exact official wire format without TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2

OUT = Path(__file__).with_name("tfserving.binpb")


def _collect(file_descriptor, seen: dict) -> None:
    if file_descriptor.name in seen:
        return
    for dep in file_descriptor.dependencies:
        _collect(dep, seen)
    proto = descriptor_pb2.FileDescriptorProto()
    file_descriptor.CopyToProto(proto)
    seen[file_descriptor.name] = proto


def main() -> None:
    from tensorflow_serving.apis import (  # noqa: PLC0415 - heavy on purpose, build time only
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2,
        prediction_service_pb2,
    )

    seen: dict = {}
    for module in (prediction_service_pb2, model_service_pb2, get_model_metadata_pb2, get_model_status_pb2):
        _collect(module.DESCRIPTOR, seen)
    fds = descriptor_pb2.FileDescriptorSet(file=list(seen.values()))  # dependencies come first
    OUT.write_bytes(fds.SerializeToString(deterministic=True))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(seen)} files)")


if __name__ == "__main__":
    main()
