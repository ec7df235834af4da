"""What a legacy call carries and how its answer is read: modelramp's format, or the file's JMESPath mappings.

`LegacyHttpSpec` (router/config.py) holds the mappings as text, compiled when the file is
loaded; this module applies them per request, and builds what a backend needs once: its static
header lines (values read from files, as a mounted Secret gives them) and its TLS context.
Every answer that does not map is an `UnmappedAnswer` (a `bad_response`, 502) whose message
names the expression, never an exception the router does not expect.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from jmespath.exceptions import JMESPathError

from router.backends.base import ColumnOutputs, PredictCall, UnmappedAnswer
from router.config import ConfigError
from router.legacy_spec import HeaderFileSpec, LegacyHttpSpec, compile_jmespath
from router.signature import TensorSpec
from serving.tfserving.tensors import NUMPY_BY_DTYPE

Outputs = dict[str, np.ndarray] | ColumnOutputs
_Specs = dict[str, np.dtype | None]
_FIELD = "arms.legacy.backend"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_ALL_FLOAT: list[tuple[_Specs | None, bool]] = [(None, False)]  # the specs last asked about, as a cell


def _all_float(specs: _Specs) -> bool:
    """Every output a float? Asked once per specs object (one per signature on the default path)."""
    last, answer = _ALL_FLOAT[0]
    if last is not specs:
        answer = all(dtype is not None and dtype.kind == "f" for dtype in specs.values())
        _ALL_FLOAT[0] = (specs, answer)
    return answer


def _arrays(columns: dict[str, list[Any]], specs: _Specs, where: Mapping[str, str] | None) -> Outputs:
    """The columns as outputs: the numpy-free path for finite float outputs, else one array per output."""
    if _all_float(specs):
        fast = ColumnOutputs.from_numbers(columns, specs)  # type: ignore[arg-type]  # the common case, without numpy; no None in specs
        if fast is not None:
            return fast
    arrays = {}
    for name, values in columns.items():
        try:
            with np.errstate(over="raise"):  # 1e39 as a float32 is not a score to pass on as infinity
                arrays[name] = np.asarray(values, dtype=specs[name])
        except (TypeError, ValueError, OverflowError, FloatingPointError) as err:
            source = f"response.{name} ({where[name]!r})" if where else "predictions"
            raise UnmappedAnswer(f"legacy system's {source} does not fit the model output {name!r}: {err}") from None
    return arrays


_SIGNATURE_SPECS: list[tuple[Mapping[str, TensorSpec] | None, _Specs]] = [(None, {})]  # the last signature's, as a cell


def _signature_specs(outputs: Mapping[str, TensorSpec]) -> _Specs:
    """The outputs' numpy dtypes, worked out once per signature (the mapping's identity), not per answer."""
    last, specs = _SIGNATURE_SPECS[0]
    if last is not outputs:
        specs = {name: NUMPY_BY_DTYPE.get(spec.dtype) for name, spec in outputs.items()}
        _SIGNATURE_SPECS[0] = (outputs, specs)
    return specs


def default_outputs(answer: object, call: PredictCall, batch: int) -> Outputs:
    """modelramp's format, `{"predictions": [{output: value}]}`, as the model's named outputs (same names and dtypes)."""
    predictions = answer.get("predictions") if type(answer) is dict else None
    if type(predictions) is not list or len(predictions) != batch or not all(type(p) is dict for p in predictions):
        raise UnmappedAnswer(f"legacy system must answer {batch} prediction object(s) under 'predictions'")
    if call.outputs is not None:
        specs: _Specs = _signature_specs(call.outputs)
    else:  # signature not known yet: pass on the numeric fields
        specs = {k: None for k, v in predictions[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if call.output_filter:
        specs = {k: v for k, v in specs.items() if k in call.output_filter}
    try:
        columns = {name: [p[name] for p in predictions] for name in specs}
    except KeyError as err:
        raise UnmappedAnswer(f"legacy system's predictions lack the model output {err.args[0]!r}") from None
    return _arrays(columns, specs, None)


def _wrong_kind(values: list[Any], dtype: np.dtype | None, scalar: bool) -> object | None:
    """The first value that is not of the output's kind (JSON numbers for numbers, strings for strings), else None.

    `scalar`: the output has one value per row (shape [-1]), so a list is wrong too.
    """
    if dtype is None:
        return None
    nested = () if scalar else (list,)
    if dtype.kind in "fiu":
        return next((v for v in values if isinstance(v, bool) or not isinstance(v, (int, float, *nested))), None)
    if dtype.kind == "b":
        return next((v for v in values if not isinstance(v, (bool, *nested))), None)
    return next((v for v in values if not isinstance(v, (str, *nested))), None)


class ResponseMapping:
    """`response:` of the file: each model output read from the answer by its own JMESPath expression."""

    def __init__(self, mapping: Mapping[str, str]):
        self.text = dict(mapping)
        self.compiled = {name: compile_jmespath(text) for name, text in mapping.items()}
        self._specs_of: tuple[Mapping[str, TensorSpec] | None, _Specs] = (None, {})
        self._scalar: frozenset[str] = frozenset()  # outputs of one value per row, in the signature last seen

    def _specs(self, outputs: Mapping[str, TensorSpec] | None) -> _Specs:
        if outputs is None:  # signature not known yet: every mapped output, dtypes as the values come
            return dict.fromkeys(self.text)
        if self._specs_of[0] is not outputs:  # once per signature, not per request
            missing = sorted(set(outputs) - set(self.text))
            if missing:
                raise UnmappedAnswer(f"{_FIELD}.response names no expression for the model output(s) {missing}; "
                                     f"the model's signature has {sorted(outputs)}, the file maps {sorted(self.text)}")
            self._specs_of = (outputs, {name: NUMPY_BY_DTYPE.get(spec.dtype) for name, spec in outputs.items()})
            self._scalar = frozenset(name for name, spec in outputs.items() if spec.shape is not None and len(spec.shape) == 1)
        return self._specs_of[1]

    def outputs(self, answer: object, call: PredictCall, batch: int) -> Outputs:
        specs = self._specs(call.outputs)
        if call.output_filter:
            specs = {k: v for k, v in specs.items() if k in call.output_filter}
        columns: dict[str, list[Any]] = {}
        for name, dtype in specs.items():
            try:
                values = self.compiled[name].search(answer)
            except JMESPathError as err:  # a function given the wrong type, at run time
                raise UnmappedAnswer(f"legacy answer does not map: response.{name} ({self.text[name]!r}) failed: {err}") from None
            if type(values) is not list or len(values) != batch:
                got = "nothing (null)" if values is None else (f"{len(values)} value(s)" if isinstance(values, list) else _show(values))
                raise UnmappedAnswer(f"legacy answer does not map: response.{name} ({self.text[name]!r}) gave {got}, "
                                     f"not a list of {batch} value(s)")
            bad = _wrong_kind(values, dtype, name in self._scalar)
            if bad is not None:
                raise UnmappedAnswer(f"legacy answer does not map: response.{name} ({self.text[name]!r}) gave {_show(bad)}, "
                                     f"not a {dtype} value")
            columns[name] = values
        return _arrays(columns, specs, self.text)


class RequestMapping:
    """`request:` of the file: the body sent, computed from `{"instances": [rows]}`."""

    def __init__(self, text: str):
        self.text = text
        self.compiled = compile_jmespath(text)

    def body(self, rows: list[Any]) -> object:
        try:
            return self.compiled.search({"instances": rows})
        except JMESPathError as err:
            raise UnmappedAnswer(f"legacy request does not map: request ({self.text!r}) failed: {err}") from None


def header_lines(spec: LegacyHttpSpec) -> bytes:
    """The configured headers as request lines; values from files are read now (a missing file is a ConfigError)."""
    lines = []
    for name, value in spec.headers.items():
        if isinstance(value, HeaderFileSpec):
            try:
                text = Path(value.file).read_text().strip()
            except (OSError, UnicodeDecodeError) as err:
                raise ConfigError(f"{_FIELD}.headers.{name}.file: cannot read {value.file}: {err}") from None
            if not text or "\r" in text or "\n" in text or not text.isascii():
                raise ConfigError(f"{_FIELD}.headers.{name}.file: {value.file} must hold one non-empty line of ASCII")
            value = text
        lines.append(f"{name}: {value}\r\n".encode("ascii"))
    return b"".join(lines)


def ssl_context(spec: LegacyHttpSpec) -> ssl.SSLContext | None:
    """The TLS context of an https:// URL (None for http://); certificate files are read now."""
    if not spec.url.startswith("https://"):
        return None
    tls = spec.tls
    try:
        context = ssl.create_default_context(cafile=tls.ca_file if tls else None)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"{_FIELD}.tls.ca_file: cannot load {tls.ca_file if tls else ''}: {err}") from None
    if tls is None:
        return context
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert_file:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"{_FIELD}.tls.cert_file: cannot load {tls.cert_file} (key {tls.key_file}): {err}") from None
    return context
