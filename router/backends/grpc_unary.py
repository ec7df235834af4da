"""A minimal HTTP/2 client for unary gRPC calls: the model arm's hot path to TF Serving.

grpc.aio runs each call through gRPC core's completion queue and a poller thread that wakes the
event loop, and that cost the router about 0.3 ms of CPU per model-arm call more than this client
does (`python loadtests/bench_grpc_client.py`: unary calls at 500 per second beside an HTTP/1.1
call of the same size on `router.backends.http1`). So the `tfserving_grpc` backend speaks the
gRPC wire protocol itself (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md), as
`router.backends.http1` speaks HTTP/1.1: on asyncio protocols, with `hpack` for the header
blocks a server sends, and only what a unary call of the router needs:

- targets `host:port`, `dns:///host:port` (every address the name resolves to: a Kubernetes
  headless Service has one per pod) and `ipv4:` / `ipv6:` address lists, as gRPC names them;
  calls go round robin over the addresses, one kept-alive connection each (another when a
  server's `SETTINGS_MAX_CONCURRENT_STREAMS` is reached), and the name is resolved again every
  `RESOLVE_EVERY_S` and whenever a connection fails, so pods that come and go are followed;
- flow control both ways: the router announces windows large enough for any answer it accepts
  (`max_message_bytes`) and sends a large request in frames as the server's windows allow;
- a deadline per call, sent as `grpc-timeout` and kept by a timer that resets the stream; when
  the server sent nothing at all during a call's whole deadline it gets a PING, and a connection
  without an answer to it within `PING_TIMEOUT_S` is dropped (a peer gone, not a slow model);
- GOAWAY (a server shutting down): calls it did not take fail as UNAVAILABLE, never processed,
  and new calls go to a new connection; UNAVAILABLE is retried once within the deadline.

Not here: TLS (the backend is plaintext, as its grpc.aio channel was), streaming calls,
compression (none is offered, so a server sends none), server push (turned off in SETTINGS).
Every failure is a `serving.tfserving.errors` error, from the gRPC status where there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import deque
from collections.abc import Sequence
from typing import cast
from urllib.parse import unquote

import grpc
from hpack import Decoder, HPACKError

from router.grpc_target import parse_target
from serving.tfserving import errors

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = 0, 1, 3, 4, 5, 6, 7, 8, 9
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
_SETTINGS_MAX_CONCURRENT_STREAMS, _SETTINGS_INITIAL_WINDOW_SIZE, _SETTINGS_MAX_FRAME_SIZE = 0x3, 0x4, 0x5
_CANCEL = 0x8  # RST_STREAM code for a call the client gave up on
_REFUSED_STREAM = 0x7  # the server did not process the stream: safe to retry
MAX_WINDOW = 2**31 - 1
FRAME_LIMIT = 16_384  # the largest frame we accept (HTTP/2's default; we never announce more)
RESOLVE_EVERY_S = 30.0
RESOLVE_TIMEOUT_S = CONNECT_TIMEOUT_S = 5.0
PING_TIMEOUT_S = 1.0
CONNECT_BACKOFF_S = 1.0  # an address that refused a connection is skipped this long
RETRY_BACKOFF_S = 0.05
# HTTP status of a response that is not gRPC -> the status it means (the gRPC HTTP/2 protocol's table).
_HTTP_TO_GRPC = {400: grpc.StatusCode.INTERNAL, 401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED,
                 404: grpc.StatusCode.UNIMPLEMENTED, 429: grpc.StatusCode.UNAVAILABLE, 502: grpc.StatusCode.UNAVAILABLE,
                 503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.UNAVAILABLE}
_CODES = {code.value[0]: code for code in grpc.StatusCode}


# A frame's 9-byte head: length (24 bits, read as 8 + 16), type, flags, stream id (its top bit reserved).
_FRAME_HEAD = struct.Struct(">BHBBI")


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def _hpack_int(value: int, prefix_bits: int) -> bytes:
    """An HPACK integer (RFC 7541, 5.1) with its first byte's flag bits zero."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((value,))
    out = [limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A header as an HPACK literal without indexing: it leaves the server's table as it was."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


def _timeout_header(seconds: float) -> bytes:
    # gRPC allows at most 8 digits; milliseconds cover a day, microseconds the short deadlines exactly.
    micros = max(1, int(seconds * 1_000_000))
    return b"%du" % micros if micros < 100_000_000 else b"%dm" % min(99_999_999, micros // 1000)


class _Stream:
    __slots__ = ("future", "chunks", "size", "headers", "pending", "window", "received", "sent_at")

    def __init__(self, future: asyncio.Future[bytes], window: int, sent_at: float) -> None:
        self.future = future
        self.chunks: list[bytes] = []
        self.size = 0
        self.headers: list[tuple[bytes, bytes]] | None = None  # the response headers; trailers are handled at the end
        self.pending = b""  # request DATA the flow-control windows have not let out yet
        self.window = window  # what the server lets us send on this stream
        self.received = False  # any frame of the answer arrived (a retry then might run the call twice)
        self.sent_at = sent_at


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: frames in and out, streams by id."""

    transport: asyncio.Transport  # set by connection_made, before the client sees the connection

    def __init__(self, client: UnaryGrpcClient, address: tuple[str, int]) -> None:
        self.client = client
        self.address = address
        self.rest = b""  # received bytes of a frame not yet complete (at most a frame: FRAME_LIMIT + 9)
        self.decoder = Decoder()
        # The header blocks of a server's answers repeat byte for byte once its table holds them;
        # a block that leaves the table as it was decodes the same next time (cleared when one does not).
        self.decoded: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self.streams: dict[int, _Stream] = {}
        self.held: set[int] = set()  # streams whose request DATA waits for flow-control window
        self.next_id = 1
        self.send_window = 65_535  # connection level, what the server lets us send
        self.initial_window = 65_535  # per stream, from the server's SETTINGS
        self.max_frame = FRAME_LIMIT
        self.max_streams = 1 << 31
        self.consumed = 0  # DATA bytes received since the last connection WINDOW_UPDATE
        self.headers_of: int | None = None  # a header block in progress (HEADERS without END_HEADERS)
        self.header_flags = 0
        self.header_block = b""
        self.going_away = False
        self.closed = False
        self.probing = False  # a PING is out, asking a silent server whether it is still there
        self.settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # the server's first SETTINGS arrived
        self.last_frame_at = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.last_frame_at = time.monotonic()
        window = self.client.max_message_bytes + 5 + FRAME_LIMIT  # one answer always fits a stream's window
        settings = (_SETTINGS_INITIAL_WINDOW_SIZE.to_bytes(2, "big") + min(window, MAX_WINDOW).to_bytes(4, "big")
                    + (0x2).to_bytes(2, "big") + (0).to_bytes(4, "big"))  # SETTINGS_ENABLE_PUSH = 0
        self.transport.write(PREFACE + _frame(_SETTINGS, 0, 0, settings)
                             + _frame(_WINDOW_UPDATE, 0, 0, (MAX_WINDOW - 65_535).to_bytes(4, "big")))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.settled.done():
            self.settled.set_exception(ConnectionError("closed before the server's HTTP/2 SETTINGS"))
        self.client.lost(self)
        self._fail_all(f"connection to the model server {self.address[0]}:{self.address[1]} lost")

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_frame_at = time.monotonic()
        if self.rest:  # a frame's start from the last read
            data = self.rest + data
        at, end = 0, len(data)
        try:
            while end - at >= 9:
                high, low, kind, flags, stream = _FRAME_HEAD.unpack_from(data, at)
                length = high << 16 | low
                if length > FRAME_LIMIT:
                    raise ConnectionError(f"frame of {length} bytes, larger than the {FRAME_LIMIT} announced")
                if end - at < 9 + length:
                    break
                payload = data[at + 9:at + 9 + length]
                at += 9 + length
                self._frame(kind, flags, stream & 0x7FFF_FFFF, payload)
        except (ConnectionError, HPACKError, ValueError, IndexError) as err:
            self._abort(f"model server broke the HTTP/2 protocol: {err}")
            return
        self.rest = data[at:] if at < end else b""

    # -- frames in --------------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.headers_of is not None and kind != _CONTINUATION:
            raise ConnectionError("a header block was interrupted by another frame")
        if kind == _DATA:
            self._data(flags, stream_id, payload)
        elif kind in (_HEADERS, _CONTINUATION):
            self._header_fragment(kind, flags, stream_id, payload)
        elif kind == _WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & 0x7FFF_FFFF
            if stream_id == 0:
                self.send_window += increment
            elif (stream := self.streams.get(stream_id)) is not None:
                stream.window += increment
            if self.held:  # the server sends a window update per answer, nearly always with nothing held back
                self._flush()
        elif kind == _SETTINGS:
            if not flags & _ACK:
                self._settings(payload)
                self.transport.write(_frame(_SETTINGS, _ACK, 0, b""))
                if not self.settled.done():
                    self.settled.set_result(None)
        elif kind == _PING:
            if not flags & _ACK:
                self.transport.write(_frame(_PING, _ACK, 0, payload))
        elif kind == _RST_STREAM:
            code = int.from_bytes(payload[:4], "big")
            self._finish(stream_id, error=errors.Unavailable(f"model server refused the call (HTTP/2 code {code})")
                         if code == _REFUSED_STREAM else errors.UserFacingError(f"model server reset the call (HTTP/2 code {code})"))
        elif kind == _GOAWAY:
            last = int.from_bytes(payload[:4], "big") & 0x7FFF_FFFF
            self.going_away = True
            for sid in [sid for sid in self.streams if sid > last]:  # never processed: a retry is safe
                self._finish(sid, error=errors.Unavailable("model server is shutting down (GOAWAY) and did not take the call"))
            if not self.streams:
                self.transport.close()
        elif kind == _PUSH_PROMISE:
            raise ConnectionError("server push, which the client turned off")
        # PRIORITY and unknown frame types are ignored, as HTTP/2 requires.

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        self.consumed += len(payload)
        if self.consumed > MAX_WINDOW // 2:
            self.transport.write(_frame(_WINDOW_UPDATE, 0, 0, self.consumed.to_bytes(4, "big")))
            self.consumed = 0
        stream = self.streams.get(stream_id)
        if stream is None:
            return  # a call that timed out meanwhile
        if flags & _PADDED:
            payload = payload[1:len(payload) - payload[0]]
        stream.received = True
        stream.chunks.append(payload)
        stream.size += len(payload)
        if stream.size > self.client.max_message_bytes + 5:
            self.transport.write(_frame(_RST_STREAM, 0, stream_id, _CANCEL.to_bytes(4, "big")))
            self._finish(stream_id, error=errors.from_grpc_code(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"model server's answer is larger than {self.client.max_message_bytes} bytes"))
        elif flags & _END_STREAM:
            self._finish(stream_id, error=errors.UserFacingError("model server ended the call without a gRPC status"))

    def _header_fragment(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == _HEADERS:
            if flags & _PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if flags & _PRIORITY:
                payload = payload[5:]
            self.headers_of, self.header_flags, self.header_block = stream_id, flags, payload
        elif stream_id != self.headers_of:
            raise ConnectionError("CONTINUATION of no header block")
        else:
            self.header_block += payload
        if not flags & _END_HEADERS:
            return
        flags, block = self.header_flags, self.header_block  # stream_id is the block's: checked above
        self.headers_of, self.header_block = None, b""
        headers = self._decode(block)  # always: the server's table changes with every block it sends
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.received = True
        if stream.headers is None:
            stream.headers = headers
            status = content_type = b""
            for name, value in headers:
                if name == b":status":
                    status = value
                elif name == b"content-type":
                    content_type = value
            if status != b"200":
                code = _HTTP_TO_GRPC.get(int(status) if status.isdigit() else 0, grpc.StatusCode.UNKNOWN)
                self._finish(stream_id, error=errors.from_grpc_code(code, f"model server answered HTTP {status.decode()}"))
                return
            if not content_type.startswith(b"application/grpc"):
                self._finish(stream_id, error=errors.UserFacingError(f"model server answered {content_type.decode()!r}, not gRPC"))
                return
            if not flags & _END_STREAM:
                return
        elif not flags & _END_STREAM:
            raise ConnectionError("a second header block that does not end the stream")
        self._finish(stream_id, trailers=headers)  # trailers, or a trailers-only answer (an error, usually)

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        found = self.decoded.get(block)
        if found is not None:
            return found
        table = self.decoder.header_table.dynamic_entries
        size, first = len(table), table[0] if table else None
        headers = cast(list[tuple[bytes, bytes]], self.decoder.decode(block, raw=True))
        if len(table) == size and (table[0] if table else None) is first:
            self.decoded[block] = headers  # the table is as it was: this block decodes to the same headers again
        else:
            self.decoded.clear()
        return headers

    def _settings(self, payload: bytes) -> None:
        for at in range(0, len(payload) - 5, 6):
            key, value = int.from_bytes(payload[at:at + 2], "big"), int.from_bytes(payload[at + 2:at + 6], "big")
            if key == _SETTINGS_INITIAL_WINDOW_SIZE:
                delta, self.initial_window = value - self.initial_window, value
                for stream in self.streams.values():
                    stream.window += delta  # may go negative: RFC 9113, 6.9.2
            elif key == _SETTINGS_MAX_FRAME_SIZE:
                self.max_frame = value
            elif key == _SETTINGS_MAX_CONCURRENT_STREAMS:
                self.max_streams = value
        self._flush()

    # -- streams ----------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not (self.closed or self.going_away) and len(self.streams) < self.max_streams and self.next_id < MAX_WINDOW

    def start(self, header_block: bytes, message: bytes, future: asyncio.Future[bytes]) -> int:
        """Send one call; its answer (the response message) or error lands in `future`."""
        stream_id, self.next_id = self.next_id, self.next_id + 2
        stream = self.streams[stream_id] = _Stream(future, self.initial_window, time.monotonic())
        out = [_frame(_HEADERS, _END_HEADERS, stream_id, header_block)]
        if len(header_block) > self.max_frame:  # only with very long metadata: the block goes in pieces
            pieces = [header_block[i:i + self.max_frame] for i in range(0, len(header_block), self.max_frame)]
            out = [_frame(_HEADERS, 0, stream_id, pieces[0])]
            out += [_frame(_CONTINUATION, _END_HEADERS if i == len(pieces) - 1 else 0, stream_id, p)
                    for i, p in enumerate(pieces[1:], 1)]
        body = b"\x00" + len(message).to_bytes(4, "big") + message  # uncompressed, length-prefixed
        if len(body) <= min(self.send_window, stream.window, self.max_frame):  # the usual case: one write
            self.send_window -= len(body)
            stream.window -= len(body)
            out.append(_frame(_DATA, _END_STREAM, stream_id, body))
            self.transport.write(b"".join(out))
        else:
            self.transport.write(b"".join(out))
            stream.pending = body
            self.held.add(stream_id)
            self._flush()
        return stream_id

    def _flush(self) -> None:
        """Send what the windows now allow of requests waiting on flow control."""
        for stream_id in sorted(self.held):  # in the order the calls started
            stream = self.streams[stream_id]
            while stream.pending and self.send_window > 0 and stream.window > 0:
                size = min(len(stream.pending), self.send_window, stream.window, self.max_frame)
                chunk, stream.pending = stream.pending[:size], stream.pending[size:]
                self.send_window -= size
                stream.window -= size
                self.transport.write(_frame(_DATA, 0 if stream.pending else _END_STREAM, stream_id, chunk))
            if not stream.pending:
                self.held.discard(stream_id)

    def cancel(self, stream_id: int, error: errors.UserFacingError) -> _Stream | None:
        """Give up a call: reset its stream (the server stops working on it) and fail it with `error`."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            if not self.closed:
                self.transport.write(_frame(_RST_STREAM, 0, stream_id, _CANCEL.to_bytes(4, "big")))
            self._finish(stream_id, error=error)
        return stream

    def expire(self, stream_id: int, timeout: float) -> None:
        """The call's deadline passed: cancel it; if the server sent nothing meanwhile, ask whether it is still there."""
        stream = self.cancel(stream_id, errors.DeadlineExceeded(f"model server did not answer within {timeout:.3f}s"))
        if stream is not None and self.last_frame_at < stream.sent_at and not self.closed and not self.probing:
            # A slow model is no reason to drop a connection other calls are using; a peer that
            # does not even answer a PING (a node gone, a black-holed route) is.
            self.probing = True
            sent = time.monotonic()
            self.transport.write(_frame(_PING, 0, 0, b"modelrmp"))
            asyncio.get_running_loop().call_later(PING_TIMEOUT_S, self._probe_expired, sent)

    def _probe_expired(self, sent: float) -> None:
        self.probing = False
        if self.last_frame_at < sent and not self.closed:
            self._abort(f"model server {self.address[0]}:{self.address[1]} did not answer a PING within {PING_TIMEOUT_S:g}s")

    def _finish(self, stream_id: int, *, trailers: list[tuple[bytes, bytes]] | None = None,
                error: errors.UserFacingError | None = None) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        self.held.discard(stream_id)
        if not stream.future.done():
            if error is None:
                try:
                    stream.future.set_result(_message(stream, trailers or []))
                except errors.UserFacingError as err:
                    stream.future.set_exception(err)
            else:
                stream.future.set_exception(error)
        if self.going_away and not self.streams and not self.closed:
            self.transport.close()
        self.client.released()

    def _fail_all(self, reason: str) -> None:
        for stream_id in list(self.streams):
            self._finish(stream_id, error=errors.Unavailable(reason))

    def _abort(self, reason: str) -> None:
        self.closed = True
        if not self.settled.done():
            self.settled.set_exception(ConnectionError(reason))
        self._fail_all(reason)
        self.transport.abort()


def _message(stream: _Stream, trailers: list[tuple[bytes, bytes]]) -> bytes:
    """The one response message of a finished call, or its gRPC status as an error."""
    status, detail = None, b""
    for name, value in trailers:
        if name == b"grpc-status":
            status = value
        elif name == b"grpc-message":
            detail = value
    if status is None:
        raise errors.UserFacingError("model server ended the call without a gRPC status")
    if status != b"0":
        code = _CODES.get(int(status) if status.isdigit() else -1, grpc.StatusCode.UNKNOWN)
        raise errors.from_grpc_code(code, unquote(detail.decode("utf-8", "replace")) or code.name)
    data = b"".join(stream.chunks)
    if len(data) < 5 or data[0] != 0 or int.from_bytes(data[1:5], "big") != len(data) - 5:
        raise errors.UserFacingError("model server's answer is not one uncompressed gRPC message")
    return data[5:]


class UnaryGrpcClient:
    """Unary gRPC calls to every address of one target, round robin (see the module docstring)."""

    def __init__(self, target: str, *, max_in_flight: int = 256, max_message_bytes: int = 64 * 1024 * 1024,
                 retries: int = 1) -> None:
        authority, self._names = parse_target(target)
        self.authority = authority.encode()
        self.max_message_bytes = max_message_bytes
        self.retries = retries
        self._addresses: list[tuple[str, int]] = []
        self._resolved_at = -RESOLVE_EVERY_S
        self._resolving: asyncio.Task[None] | None = None
        self._connections: dict[tuple[str, int], list[_Connection]] = {}
        self._connecting: dict[tuple[str, int], asyncio.Task[_Connection]] = {}  # one connection attempt per address at a time
        self._backoff: dict[tuple[str, int], tuple[float, str]] = {}  # address -> (until when it is skipped, why)
        self._next = 0  # round-robin position
        self._max = max_in_flight
        self._busy = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heads: dict[str, bytes] = {}  # each method's request headers but the deadline (literals: no HPACK state)

    async def call(self, method: str, request: bytes, timeout: float, metadata: Sequence[tuple[str, str]] = ()) -> bytes:
        """The response message of `method` (`/package.Service/Method`) for `request`, both serialized."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        head = self._heads.get(method)
        if head is None:
            head = self._heads[method] = (
                b"\x83\x86\x04" + _hpack_int(len(method), 7) + method.encode()  # :method POST, :scheme http, :path
                + b"\x01" + _hpack_int(len(self.authority), 7) + self.authority  # :authority
                + b"\x00\x0ccontent-type\x10application/grpc\x00\x02te\x08trailers")
        if metadata:
            head += b"".join(_literal(name.encode(), value.encode()) for name, value in metadata)
        for attempt in range(self.retries + 1):
            try:
                return await self._once(loop, head, request, deadline)
            except errors.Unavailable:
                if attempt >= self.retries or deadline - time.monotonic() <= RETRY_BACKOFF_S:
                    raise
                await asyncio.sleep(RETRY_BACKOFF_S * (attempt + 1))
        raise AssertionError("unreachable")

    async def _once(self, loop: asyncio.AbstractEventLoop, head: bytes, request: bytes, deadline: float) -> bytes:
        if self._busy >= self._max:
            await self._wait_for_turn(loop, deadline)
        self._busy += 1
        conn = self._ready_connection()
        if conn is None:  # resolution due, or no usable connection: the slow way (no coroutine per call otherwise)
            try:
                conn = await self._connection(loop, deadline)
            except BaseException:
                self.released()
                raise
        remaining = max(deadline - time.monotonic(), 0.001)
        future: asyncio.Future[bytes] = loop.create_future()
        stream_id = conn.start(head + _literal(b"grpc-timeout", _timeout_header(remaining)), request, future)
        timer = loop.call_later(remaining, conn.expire, stream_id, remaining)
        try:
            return await future
        except asyncio.CancelledError:
            conn.cancel(stream_id, errors.UserFacingError("call cancelled"))  # the caller gave up: the server may stop
            raise
        finally:
            timer.cancel()

    async def _wait_for_turn(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        while self._busy >= self._max:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiting.append(waiter)
            try:
                await asyncio.wait_for(waiter, max(deadline - time.monotonic(), 0.001))
            except (asyncio.TimeoutError, TimeoutError):
                raise errors.DeadlineExceeded(f"{self._max} calls to the model server in flight; no turn before the deadline") from None

    def released(self) -> None:
        """A call ended (a stream finished, or a call failed before it had one): let a waiting one go."""
        self._busy -= 1
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """What the target resolved to last (replaced whole on each resolution)."""
        return self._addresses

    # -- the same servers for another protocol (TF Serving's REST port, `tfserving_grpc` rest_port) --

    def next_address(self) -> tuple[str, int] | None:
        """The next address round robin, shared with this client's calls; None when the name is due to be resolved."""
        if not self._addresses or time.monotonic() - self._resolved_at > RESOLVE_EVERY_S:
            return None
        return self._pick()

    async def address(self, deadline: float) -> tuple[str, int]:
        """The next address round robin, the name resolved first when that is due; Unavailable when none can be used."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if time.monotonic() - self._resolved_at > RESOLVE_EVERY_S:
            if not self._addresses:
                await self._resolve(loop, deadline)
            elif self._resolving is None:  # in the background: the addresses we have serve meanwhile
                self._resolving = loop.create_task(self._resolve(loop, time.monotonic() + RESOLVE_TIMEOUT_S))
        found = self._pick()
        if found is None:
            reasons = {reason for _, reason in self._backoff.values()} or {"its name resolved to no address"}
            raise errors.Unavailable(f"model server unreachable: {'; '.join(sorted(reasons))}")
        return found

    def back_off(self, address: tuple[str, int], reason: str) -> None:
        """`address` failed a call of another protocol: skip it for a while and resolve the name again."""
        self._backoff[address] = (time.monotonic() + CONNECT_BACKOFF_S, reason)
        self._resolved_at = -RESOLVE_EVERY_S

    def _pick(self) -> tuple[str, int] | None:
        addresses = self._addresses
        count = len(addresses)
        now = time.monotonic()
        for i in range(count):
            at = (self._next + i) % count
            backoff = self._backoff.get(addresses[at])
            if backoff is None or backoff[0] <= now:
                self._next = (at + 1) % count
                return addresses[at]
        return None

    def _ready_connection(self) -> _Connection | None:
        """The next address's usable connection when no resolution is due and that address has one, else None."""
        addresses = self._addresses
        if not addresses or time.monotonic() - self._resolved_at > RESOLVE_EVERY_S:
            return None
        at = self._next % len(addresses)
        for conn in self._connections.get(addresses[at], ()):
            if conn.usable:
                self._next = (at + 1) % len(addresses)
                return conn
        return None

    async def _connection(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        now = time.monotonic()
        if now - self._resolved_at > RESOLVE_EVERY_S:
            if not self._addresses:
                await self._resolve(loop, deadline)
            elif self._resolving is None:  # in the background: the addresses we have serve meanwhile
                self._resolving = loop.create_task(self._resolve(loop, now + RESOLVE_TIMEOUT_S))
        failure = "its name resolved to no address"
        while time.monotonic() < deadline:
            addresses = self._addresses
            count = len(addresses)
            for i in range(count):
                address = addresses[(self._next + i) % count]
                for conn in self._connections.get(address, ()):
                    if conn.usable:
                        self._next = (self._next + i + 1) % count
                        return conn
                backoff = self._backoff.get(address)
                if backoff is not None and backoff[0] > time.monotonic():
                    failure = backoff[1]
                    continue
                break  # this address is next and has no connection to spare: connect to it
            else:
                raise errors.Unavailable(f"model server unreachable: {failure}")
            attempt = self._connecting.get(address)
            if attempt is None:  # calls arriving while it connects wait for the same connection
                attempt = self._connecting[address] = loop.create_task(self._connect(loop, address))
                attempt.add_done_callback(self._connect_done)
            with contextlib.suppress(OSError, asyncio.TimeoutError, TimeoutError):  # recorded in _backoff by _connect
                await asyncio.wait_for(asyncio.shield(attempt), max(deadline - time.monotonic(), 0.001))
            # Look again: the new connection is usable unless the calls that waited with this one filled it.
        raise errors.DeadlineExceeded("no connection to the model server within the deadline")

    def _connect_done(self, attempt: asyncio.Task[_Connection]) -> None:
        for address, task in list(self._connecting.items()):
            if task is attempt:
                del self._connecting[address]
        if not attempt.cancelled():
            attempt.exception()  # retrieved here: every caller waiting for it may have timed out already

    async def _connect(self, loop: asyncio.AbstractEventLoop, address: tuple[str, int]) -> _Connection:
        """A new connection once the server's SETTINGS arrived: its stream limit and windows are known before it is used."""
        made: list[_Connection] = []

        async def connect() -> _Connection:
            _, conn = await loop.create_connection(lambda: _Connection(self, address), *address)
            made.append(conn)
            await conn.settled
            return conn

        try:
            conn = await asyncio.wait_for(connect(), CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, TimeoutError) as err:
            for conn in made:
                conn.transport.abort()
            reason = f"cannot connect to {address[0]}:{address[1]}: {str(err) or 'no HTTP/2 SETTINGS within the time allowed'}"
            self._backoff[address] = (time.monotonic() + CONNECT_BACKOFF_S, reason)
            self._resolved_at = -RESOLVE_EVERY_S  # the addresses may have changed: resolve again on the next call
            raise
        self._backoff.pop(address, None)
        self._connections.setdefault(address, []).append(conn)
        return conn

    async def _resolve(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        try:
            found: list[tuple[str, int]] = []
            for host, port in self._names:
                infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM),
                                               max(deadline - time.monotonic(), 0.001))
                found += [(str(info[4][0]), port) for info in infos if (str(info[4][0]), port) not in found]
        except (OSError, asyncio.TimeoutError, TimeoutError) as err:
            if not self._addresses:
                raise errors.Unavailable(f"model server unreachable: cannot resolve {self._names[0][0]}: {str(err) or 'timed out'}") from None
            return  # keep the addresses we had
        finally:
            self._resolving = None
        self._resolved_at = time.monotonic()
        self._addresses = found
        for address in [a for a in self._connections if a not in found]:  # a pod gone: finish its calls, then close
            for conn in self._connections.pop(address):
                conn.going_away = True
                if not conn.streams:
                    conn.transport.close()

    def lost(self, conn: _Connection) -> None:
        """A connection closed: forget it, and resolve the name again on the next call."""
        conns = self._connections.get(conn.address)
        if conns is not None and conn in conns:
            conns.remove(conn)
        self._resolved_at = -RESOLVE_EVERY_S

    def close(self) -> None:
        for conns in self._connections.values():
            for conn in conns:
                with contextlib.suppress(RuntimeError):  # the loop may be closed already
                    conn.transport.close()
        self._connections.clear()
