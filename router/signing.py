"""Signed request ids: experiment, arm, analysis bucket and time under an HMAC, so outcomes cannot be forged or misattributed.

Format (dot-separated, URL-safe, about 65 characters):

    <experiment>.<arm>.<bucket>.<issued_ms>.<nonce>.<signature>

`signature` is the first 16 bytes of HMAC-SHA256(key, "<experiment>.<arm>.<bucket>.<issued_ms>.<nonce>"),
base64url without padding. `bucket` is the unit's analysis bucket in decimal (router/buckets.py),
so an outcome is counted in the bucket its exposure was. Experiment names are DNS labels and
arms are `legacy`/`model`, so no field contains a dot. Ids of the earlier five-field format
(without the bucket) are rejected as malformed (InvalidArgument), never half-parsed. Every
router replica of an experiment must share the key (a mounted secret file or an environment
variable) to accept each other's ids.
"""

from __future__ import annotations

import base64
import hmac
import os
import random
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from router._sha256 import sha256
from serving.tfserving.errors import InvalidArgument, PermissionDenied

_SIG_BYTES = 16
KEY_ENV = "MODELRAMP_SIGNING_KEY"


class ForgedRequestId(PermissionDenied):
    """The id's signature does not match: forged, tampered with, or signed with another key."""


class ExpiredRequestId(PermissionDenied):
    """The id is authentic but older than the outcome window."""


@dataclass(frozen=True)
class RequestId:
    """What a verified request id says."""

    experiment: str
    arm: str
    issued_at: float  # seconds since the epoch
    bucket: int  # the unit's analysis bucket (router/buckets.py), as signed
    signature: bytes  # unique per id: the deduplication key


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def load_key(key_file: str | Path | None = None, env: dict[str, str] | None = None) -> bytes | None:
    """The signing key from a file (stripped) or the MODELRAMP_SIGNING_KEY variable; None if neither."""
    if key_file:
        key = Path(key_file).read_bytes().strip()
        if not key:
            raise InvalidArgument(f"signing key file {key_file} is empty")
        return key
    value = (os.environ if env is None else env).get(KEY_ENV, "")
    return value.encode() if value else None


class Signer:
    """Issues and verifies request ids with one key."""

    def __init__(self, key: bytes | None = None, ttl_seconds: float = 86_400.0):
        # A random key works for one replica only; the CLI warns when it falls back to one.
        self._key = key or secrets.token_bytes(32)
        # Keyed once; each id copies it (half the cost of hmac.digest, which sets up the key anew),
        # on CPython's SHA-256 rather than OpenSSL's (router/_sha256.py says why).
        self._mac = hmac.new(self._key, digestmod=sha256)
        self.ttl_seconds = ttl_seconds
        # The nonce only keeps ids apart (the HMAC is what makes them unforgeable), so it need not
        # be secret: a generator seeded from os.urandom, not a getrandom() system call per request.
        self._nonces = random.Random()

    def _sign(self, payload: str) -> bytes:
        mac = self._mac.copy()
        mac.update(payload.encode())
        return mac.digest()[:_SIG_BYTES]

    def issue(self, experiment: str, arm: str, now: float | None = None, bucket: int = 0) -> str:
        """A fresh signed id for one answered request of a unit in analysis bucket `bucket`."""
        issued_ms = int((time.time() if now is None else now) * 1000)
        payload = f"{experiment}.{arm}.{bucket:d}.{issued_ms}.{self._nonces.getrandbits(48):012x}"
        return f"{payload}.{_b64(self._sign(payload))}"

    def verify(self, request_id: object, now: float | None = None) -> RequestId:
        """The id's contents, or InvalidArgument (malformed), ForgedRequestId or ExpiredRequestId."""
        if not isinstance(request_id, str) or len(request_id) > 256:
            raise InvalidArgument("request_id must be a string of at most 256 characters")
        parts = request_id.split(".")
        if len(parts) != 6:
            raise InvalidArgument("request_id is not a modelramp request id")
        experiment, arm, bucket, issued_ms, _nonce, signature = parts
        payload = request_id[: -len(signature) - 1]
        try:
            given = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        except (ValueError, TypeError):
            raise ForgedRequestId("request_id signature is not valid") from None
        if not hmac.compare_digest(given, self._sign(payload)):
            raise ForgedRequestId("request_id signature does not match: forged or tampered with")
        issued_at = int(issued_ms) / 1000.0  # signed, so it is the integer we wrote
        age = (time.time() if now is None else now) - issued_at
        if age > self.ttl_seconds:
            raise ExpiredRequestId(f"request_id expired: issued {age:.0f}s ago, outcomes are accepted for {self.ttl_seconds:.0f}s")
        return RequestId(experiment, arm, issued_at, int(bucket), given)
