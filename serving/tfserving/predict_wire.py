"""A PredictRequest's bytes written straight from REST rows: the protobuf wire format, no messages built.

Building the request through the protobuf runtime (`rows_into_tensor_protos`: a map entry, a
dtype, a shape and a content per input) cost the router about 90 us of CPU per one-row request
of the example model's 19 inputs, more than the call itself (`python loadtests/bench_grpc_client.py`
measures the call; cProfile of the backend's predict the rest). Written here, each input is a
prefix worked out once per (input, batch size) plus its values: a protobuf message is the
concatenation of its fields, so the model spec and the output filter are serialized once by the
runtime and the inputs appended as map entries (PredictRequest field 2, entry key 1 and value 2).

The TensorProto of each input is the one `to_tensor_proto` writes for the numpy column: dtype
(field 1), a rank-1 shape of the batch (field 2: `dim` 2, `size` 1), float32 values packed in
`tensor_content` (field 4; `array('f')` rounds doubles as numpy does) or each string in
`string_val` (field 8). Only DT_FLOAT and DT_STRING inputs (the common case); any other dtype
returns None and the caller builds messages. tests/serving/tfserving/test_predict_wire.py checks
the bytes parse to the runtime's message for random rows and batches.
"""

from __future__ import annotations

import array
import operator
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from serving.tfserving.tensors import DT_FLOAT, DT_STRING


def varint(value: int) -> bytes:
    """A protobuf base-128 varint (non-negative `value`)."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (`tag` = field number << 3 | 2, one byte for the fields used here)."""
    return bytes((tag,)) + varint(len(payload)) + payload


_ENTRY, _KEY, _VALUE = 0x12, 0x0A, 0x12  # PredictRequest.inputs (2), map entry key (1) and value (2)
_SHAPE, _DIM, _CONTENT, _STRING = 0x12, 0x12, 0x22, 0x42  # TensorProto.tensor_shape (2), .dim (2), .tensor_content (4), .string_val (8)


class RowsRequestEncoder:
    """PredictRequest bytes for rows of one signature: `head` (model spec) + the inputs + `tail` (output filter)."""

    def __init__(self, head: bytes, dtypes: Mapping[str, int], tail: bytes = b"") -> None:
        self.head, self.tail = head, tail
        self.dtypes = dict(dtypes)
        self.supported = all(dtype in (DT_FLOAT, DT_STRING) for dtype in self.dtypes.values())
        self._keys = {name: _field(_KEY, name.encode()) for name in self.dtypes}
        self._prefixes: dict[int, dict[str, bytes]] = {}  # batch size -> input -> what precedes its values
        self._floats = [name for name, dtype in self.dtypes.items() if dtype == DT_FLOAT]
        self._strings = tuple(name for name, dtype in self.dtypes.items() if dtype == DT_STRING)
        # One-row requests (most of them) are written without a loop over the inputs (`_encode_row`).
        # Each getter asks for one name more than there are (the first again), so that it returns a
        # tuple even for one input; what zips or maps them with the names stops at the last name.
        self._float_values = operator.itemgetter(*self._floats, self._floats[0]) if self._floats else None
        self._string_values = operator.itemgetter(*self._strings, self._strings[0]) if self._strings else None
        self._float_chunks = struct.Struct("4s" * (len(self._floats) + 1))  # packed float32s -> 4 bytes each
        self._row_float_prefixes = tuple(self._prefix(1)[name] for name in self._floats) if self.supported else ()
        # Each string input's whole entry by value, as categories repeat.
        self._string_entries: dict[tuple[str, str], bytes] = {}

    def _prefix(self, batch: int) -> dict[str, bytes]:
        found = self._prefixes.get(batch)
        if found is None:
            shape = _field(_SHAPE, _field(_DIM, b"\x08" + varint(batch)))
            found = {}
            for name, dtype in self.dtypes.items():
                tensor_start = b"\x08" + varint(dtype) + shape
                if dtype == DT_FLOAT:  # everything but the 4 * batch content bytes is fixed: the entry's lengths too
                    tensor = tensor_start + bytes((_CONTENT,)) + varint(4 * batch)
                    value_len = len(tensor) + 4 * batch
                    entry_len = len(self._keys[name]) + 1 + len(varint(value_len)) + value_len
                    found[name] = bytes((_ENTRY,)) + varint(entry_len) + self._keys[name] + bytes((_VALUE,)) + varint(value_len) + tensor
                else:
                    found[name] = tensor_start  # the strings' lengths vary: the entry is framed per request
            if len(self._prefixes) > 64:  # a few batch sizes in practice; never grow without bound
                self._prefixes.clear()
            self._prefixes[batch] = found
        return found

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> bytes | None:
        """The request's bytes, or None if an input's dtype is not one written here."""
        if not self.supported:
            return None
        prefixes = self._prefix(len(rows))
        if len(rows) == 1:
            return self._encode_row(rows[0], prefixes)
        parts = [self.head]
        for name, dtype in self.dtypes.items():
            if dtype == DT_FLOAT:
                parts.append(prefixes[name])
                parts.append(array.array("f", [row[name] for row in rows]).tobytes())
            else:
                strings = b"".join(_field(_STRING, row[name].encode()) for row in rows)
                value = _field(_VALUE, prefixes[name] + strings)
                parts.append(_field(_ENTRY, self._keys[name] + value))
        parts.append(self.tail)
        return b"".join(parts)

    def _encode_row(self, row: Mapping[str, Any], prefixes: dict[str, bytes]) -> bytes:
        # C calls only, no loop over the inputs (19 in the example model): every float in one array
        # (the same float32 rounding as numpy's), cut into 4 bytes each, each put after its entry's
        # fixed prefix; each string's entry looked up by value. The float entries come first and the
        # string entries after them: a protobuf map's entries may come in any order.
        parts = [self.head]
        if self._float_values is not None:
            packed = array.array("f", self._float_values(row)).tobytes()
            parts += map(operator.add, self._row_float_prefixes, self._float_chunks.unpack(packed))
        if self._string_values is not None:
            keys = list(zip(self._strings, self._string_values(row), strict=False))  # the getter's extra value left out
            entries = self._string_entries
            found: list[Any] = list(map(entries.get, keys))  # bytes, or None for a value met for the first time
            if None in found:
                if len(entries) > 4096:  # categories are few; free text must not grow this without bound
                    entries.clear()
                for key in keys:
                    if key not in entries:
                        name, value = key
                        tensor = prefixes[name] + _field(_STRING, value.encode())
                        entries[key] = _field(_ENTRY, self._keys[name] + _field(_VALUE, tensor))
                found = [entries[key] for key in keys]
            parts += found
        parts.append(self.tail)
        return b"".join(parts)
