"""One loaded model version: its signatures, their input/output specs, and a checked call.

Inputs are checked the way TF Serving checks them (names, dtype, rank and fixed dimensions,
one batch size) so that a bad request gets INVALID_ARGUMENT with a precise message instead of a
TensorFlow stack trace.

The model is run the way TF Serving runs it: the SavedModel's MetaGraph loaded into a session,
each signature a feed/fetch call on its tensors (TF Serving's SavedModelBundle and Session::Run).
From Python that is also the cheapest call: a session callable takes the numpy arrays as they are,
while a TF2 signature call converts every input to an eager tensor first (one row of the churn
model: about 0.12 ms against 0.9-1.1 ms, `python loadtests/bench_model_server.py`, which reports
both).
Keras's `predict` is never on the request path.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

from serving.tfserving.errors import InvalidArgument, NotFound
from serving.tfserving.tensors import DT_STRING, dtype_name


@dataclass(frozen=True)
class TensorSpecInfo:
    dtype: int  # TensorFlow DataType number
    shape: tuple[int, ...] | None  # -1 for an unknown dimension; None for unknown rank
    numpy_dtype: np.dtype | None = None  # None for strings; computed once, not per request


@dataclass(frozen=True)
class SignatureInfo:
    inputs: dict[str, TensorSpecInfo]
    outputs: dict[str, TensorSpecInfo]
    method_name: str


def _spec(info) -> TensorSpecInfo:
    shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
    numpy_dtype = None if info.dtype == DT_STRING else np.dtype(tf.as_dtype(info.dtype).as_numpy_dtype)
    return TensorSpecInfo(info.dtype, shape, numpy_dtype)


# TF2 SavedModels list their initialiser among the signatures; TF Serving reports it in metadata
# but it is not a model to call.
_INIT_OP_KEY = "__saved_model_init_op"


def session_config(intra_op_threads: int = 0, inter_op_threads: int = 0) -> tf.compat.v1.ConfigProto:
    """TF Serving's `--tensorflow_intra_op_parallelism` / `--tensorflow_inter_op_parallelism` (0: TensorFlow chooses)."""
    for flag, value in (("intra_op", intra_op_threads), ("inter_op", inter_op_threads)):
        if value < 0:
            raise ValueError(f"--tensorflow_{flag}_parallelism must be 0 (TensorFlow chooses) or a number of threads, not {value}")
    return tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra_op_threads, inter_op_parallelism_threads=inter_op_threads)


class Servable:
    """A SavedModel version loaded once, callable by signature name."""

    def __init__(self, name: str, version: int, path: Path, config: tf.compat.v1.ConfigProto | None = None):
        self.name = name
        self.version = version
        self.path = Path(path)
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph, config=config)
        # The TF1 loader is marked deprecated (TF2 prefers tf.saved_model.load, whose calls cost eight
        # times as much here) but is in TensorFlow 2.21, which pyproject pins; its notice is kept quiet.
        logger, level = tf.get_logger(), tf.get_logger().level
        logger.setLevel(logging.ERROR)
        try:
            with self._graph.as_default():
                meta_graph = tf.compat.v1.saved_model.loader.load(self._session, [tf.saved_model.SERVING], str(self.path))
        finally:
            logger.setLevel(level)
        # The SignatureDef protos exactly as stored in saved_model.pb (what TF Serving reports).
        self.signature_defs = dict(meta_graph.signature_def)
        self.signatures = {
            key: SignatureInfo({k: _spec(v) for k, v in sd.inputs.items()}, {k: _spec(v) for k, v in sd.outputs.items()}, sd.method_name)
            for key, sd in self.signature_defs.items() if key != _INIT_OP_KEY
        }
        # One callable per (signature, outputs asked for); input order is the sorted alias order.
        self._callables: dict[tuple[str, tuple[str, ...]], object] = {}
        self._callables_lock = threading.Lock()

    def signature(self, name: str | None) -> tuple[str, SignatureInfo]:
        key = name or "serving_default"
        if key not in self.signatures:
            raise NotFound(f"Serving signature name: \"{key}\" not found in signature def; available: {sorted(self.signatures)}")
        return key, self.signatures[key]

    def check_inputs(self, info: SignatureInfo, inputs: dict[str, np.ndarray]) -> None:
        """Raise InvalidArgument unless `inputs` fit the signature exactly."""
        extra = sorted(set(inputs) - set(info.inputs))
        missing = sorted(set(info.inputs) - set(inputs))
        if extra:
            raise InvalidArgument(f"input tensor alias not found in signature: {', '.join(extra)}. "
                                  f"Inputs expected to be in the set {{{','.join(sorted(info.inputs))}}}.")
        if missing:
            raise InvalidArgument(f"Request inputs do not match required inputs for model `{self.name}`. "
                                  f"Missing but required: {{{','.join(missing)}}}.")
        batch = set()
        for name, array in inputs.items():
            spec = info.inputs[name]
            is_string = array.dtype == object or array.dtype.kind in "SU"
            if (spec.dtype == DT_STRING) != is_string or (not is_string and spec.numpy_dtype != array.dtype):
                got = "DT_STRING" if is_string else dtype_name(tf.as_dtype(array.dtype).as_datatype_enum)
                raise InvalidArgument(f"input '{name}' expects {dtype_name(spec.dtype)} but {got} was provided")
            if spec.shape is not None:
                if array.ndim != len(spec.shape):
                    raise InvalidArgument(f"input '{name}' must have rank {len(spec.shape)} (shape {list(spec.shape)}), "
                                          f"got shape {list(array.shape)}")
                for want, got in zip(spec.shape, array.shape, strict=True):
                    if want != -1 and want != got:
                        raise InvalidArgument(f"input '{name}' must have shape {list(spec.shape)}, got {list(array.shape)}")
            if array.ndim:
                batch.add(array.shape[0])
        if len(batch) > 1:
            raise InvalidArgument(f"all inputs must have the same batch size, got sizes {sorted(batch)}")

    def predict(self, signature_name: str | None, inputs: dict[str, np.ndarray],
                output_filter: list[str] | None = None) -> tuple[str, dict[str, np.ndarray]]:
        """Checked signature call; returns (signature key, output arrays)."""
        key, info = self.signature(signature_name)
        self.check_inputs(info, inputs)
        if output_filter:
            unknown = sorted(set(output_filter) - set(info.outputs))
            if unknown:
                raise InvalidArgument(f"output tensor alias not found in signature: {', '.join(unknown)}")
        # A set, in one order: the answer is a map, and each distinct tuple gets its own callable
        # in the session, so repeats or reorderings must not make new ones.
        wanted = tuple(sorted(set(output_filter))) if output_filter else tuple(info.outputs)
        try:  # string inputs go in as they come: object arrays of bytes (trailing NULs kept)
            outputs = self.session_callable(key, wanted)(*(inputs[name] for name in sorted(inputs)))
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as err:
            raise InvalidArgument(f"{type(err).__name__}: {getattr(err, 'message', err)}") from None
        return key, dict(zip(wanted, outputs, strict=True))

    def session_callable(self, key: str, outputs: tuple[str, ...]):
        """The unchecked call of one signature: input arrays in sorted alias order, outputs as listed."""
        found = self._callables.get((key, outputs))
        if found is None:
            sd = self.signature_defs[key]
            options = config_pb2.CallableOptions(feed=[sd.inputs[name].name for name in sorted(sd.inputs)],
                                                 fetch=[sd.outputs[name].name for name in outputs])
            with self._callables_lock:  # registering one edits the session's state
                found = self._callables.get((key, outputs))
                if found is None:
                    # The session's own callable (TF_SessionMakeCallable): numpy in, numpy out, no
                    # Python per input. The public `make_callable` with a feed list falls back to
                    # `Session.run` with a feed dict, which costs eight times as much per row here.
                    found = self._callables[(key, outputs)] = self._session._make_callable_from_options(options)
        return found
