"""Signed request ids: experiment, arm, analysis bucket, time and salt under an HMAC, so outcomes cannot be forged or misattributed.

Format (dot-separated, URL-safe, about 75 characters):

    <experiment>.<arm>.<bucket>.<issued_ms>.<salt_tag>.<nonce>.<signature>

`signature` is the first 16 bytes of HMAC-SHA256(key, "<experiment>.<arm>.<bucket>.<issued_ms>.<salt_tag>.<nonce>"),
base64url without padding. `bucket` is the unit's analysis bucket in decimal (router/buckets.py),
so an outcome is counted in the bucket its exposure was. `salt_tag` names the assignment salt the
id was issued under: the first 6 bytes of HMAC-SHA256(key, "salt\0" + salt), base64url (8
characters). It is keyed because the salt must stay secret (with it anyone can compute every
unit's arm): an unkeyed hash of a guessable salt would give it away to an offline search.
Experiment names are DNS labels and arms are `legacy`/`model`, so no field contains a dot. Ids of
the earlier five- and six-field formats are rejected as malformed (InvalidArgument), never
half-parsed. Every router replica of an experiment must share the key (a mounted secret file or
an environment variable) to accept each other's ids.

What a verified id must also match, each refused with its own error (403) and rejection reason:

- the experiment in force (`wrong_experiment`): the key may be shared by several experiments, and
  an outcome of one must never be counted in another (QA ids, `<name>:qa`, are the experiment's);
- the salt in force (`stale_salt`): a new salt reassigns every unit, so an outcome of an exposure
  under the old one belongs to an assignment the analysis no longer counts;
- the clock (`future`): issued at most `MAX_CLOCK_SKEW_SECONDS` ahead of this replica's clock, so
  an id dated years ahead (signed by a replica with a wrong clock) is not kept past its expiry.

The experiment and salt in force come from `Signer.follow` (the router process ties it to its
configuration); a signer that follows nothing checks neither and issues ids under the empty salt.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from router._sha256 import sha256
from router.qa import qa_label
from serving.tfserving.errors import InvalidArgument, PermissionDenied, UserFacingError

_SIG_BYTES = 16
_SALT_TAG_BYTES = 6
KEY_ENV = "MODELRAMP_SIGNING_KEY"
# Replicas of one deployment keep NTP time, well within a second of each other; a minute absorbs a
# clock stepping back after a sync without letting an id outlive its window by more than that.
# A constant, not yet a field of the experiment file's `router:` section.
MAX_CLOCK_SKEW_SECONDS = 60.0


class ForgedRequestId(PermissionDenied):
    """The id's signature does not match: forged, tampered with, or signed with another key."""


class ExpiredRequestId(PermissionDenied):
    """The id is authentic but older than the outcome window."""


class FutureRequestId(PermissionDenied):
    """The id is authentic but dated beyond the clock-skew allowance ahead of now."""


class WrongExperimentRequestId(PermissionDenied):
    """The id is authentic but was issued for another experiment than the one in force."""


class StaleSaltRequestId(PermissionDenied):
    """The id is authentic but was issued under another assignment salt (before a salt change)."""


# Each rejection's reason label in modelramp_outcomes_rejected_total (router/outcomes.py).
REJECTION_REASONS: dict[type[UserFacingError], str] = {
    ForgedRequestId: "forged", ExpiredRequestId: "expired", FutureRequestId: "future",
    WrongExperimentRequestId: "wrong_experiment", StaleSaltRequestId: "stale_salt",
}


@dataclass(frozen=True)
class RequestId:
    """What a verified request id says."""

    experiment: str
    arm: str
    issued_at: float  # seconds since the epoch
    bucket: int  # the unit's analysis bucket (router/buckets.py), as signed
    signature: bytes  # unique per id: the deduplication key


_URLSAFE = bytes.maketrans(b"+/", b"-_")
# HMAC's inner and outer key pads (RFC 2104) as translation tables: key XOR 0x36, key XOR 0x5c.
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
_BLOCK = 64  # SHA-256's block size in bytes


def _b64(raw: bytes) -> str:
    """base64url without padding (what `base64.urlsafe_b64encode` gives, without its two Python frames)."""
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


class _Hmac:
    """HMAC-SHA256 under one key, as `hmac.new(key, msg, sha256).digest()` computes it.

    The two keyed hash states are kept and copied per message: two C calls each, where a copy of
    an `hmac.HMAC` runs four Python methods. On a router woken for each request, every frame is
    more to bring back into the caches (router/_sha256.py); tests/router/test_outcomes.py checks
    the digests against `hmac` for short, block-sized and longer keys.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = sha256(key.translate(_IPAD))
        self._outer = sha256(key.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


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
        # Keyed once, each id copying the keyed states (hmac.digest sets up the key anew every
        # time), on CPython's SHA-256 rather than OpenSSL's (router/_sha256.py says why).
        self._mac = _Hmac(self._key)
        self.ttl_seconds = ttl_seconds
        # The nonce only keeps ids apart (the HMAC is what makes them unforgeable), so it need not
        # be secret: a generator seeded from os.urandom, not a getrandom() system call per request.
        self._nonces = random.Random()
        self._scope: Callable[[], tuple[str, str]] | None = None
        self._tags: dict[str, str] = {}

    def follow(self, scope: Callable[[], tuple[str, str]]) -> None:
        """Issue and accept ids for `scope()`'s (experiment name, salt), asked at every issue and report.

        A callable rather than values, so that every way a configuration is put in force (the
        file, the weights API, whatever comes next) is followed without telling the signer.
        """
        self._scope = scope

    def scope(self) -> tuple[str | None, str | None]:
        """(experiment in force, salt in force); (None, None), any, for a signer that follows nothing."""
        return self._scope() if self._scope is not None else (None, None)

    def salt_tag(self, salt: str) -> str:
        """The id field naming `salt`: keyed, so it says nothing about the salt without the key."""
        tag = self._tags.get(salt)
        if tag is None:
            tag = self._tags[salt] = _b64(self._mac.digest(b"salt\0" + salt.encode())[:_SALT_TAG_BYTES])
            if len(self._tags) > 64:  # salts change rarely; never let a long-lived process grow this
                self._tags = {salt: tag}
        return tag

    def _sign(self, payload: str) -> bytes:
        return self._mac.digest(payload.encode())[:_SIG_BYTES]

    def issue(self, experiment: str, arm: str, now: float | None = None, bucket: int = 0) -> str:
        """A fresh signed id for one answered request of a unit in analysis bucket `bucket`."""
        issued_ms = int((time.time() if now is None else now) * 1000)
        salt = self._scope()[1] if self._scope is not None else ""
        tag = self._tags.get(salt) or self.salt_tag(salt)  # the cache read here: this runs on every answer
        payload = f"{experiment}.{arm}.{bucket:d}.{issued_ms}.{tag}.{self._nonces.getrandbits(48):012x}"
        return f"{payload}.{_b64(self._mac.digest(payload.encode())[:_SIG_BYTES])}"

    def verify(self, request_id: object, now: float | None = None) -> RequestId:
        """The id's contents, or InvalidArgument (malformed) or one of the PermissionDenied errors above.

        Checked in this order: form, signature (nothing unsigned is believed), experiment, salt,
        clock (future, then expired).
        """
        if not isinstance(request_id, str) or len(request_id) > 256:
            raise InvalidArgument("request_id must be a string of at most 256 characters")
        parts = request_id.split(".")
        if len(parts) != 7:
            raise InvalidArgument("request_id is not a modelramp request id")
        experiment, arm, bucket, issued_ms, tag, _nonce, signature = parts
        payload = request_id[: -len(signature) - 1]
        try:
            given = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        except (ValueError, TypeError):
            raise ForgedRequestId("request_id signature is not valid") from None
        if not hmac.compare_digest(given, self._sign(payload)):
            raise ForgedRequestId("request_id signature does not match: forged or tampered with")
        name, salt = self.scope()
        if name is not None and experiment not in (name, qa_label(name)):
            raise WrongExperimentRequestId(f"request_id was issued for experiment {experiment!r}; this router runs {name!r}")
        if salt is not None and tag != self.salt_tag(salt):
            raise StaleSaltRequestId("request_id was issued under another assignment salt (before the experiment's salt "
                                     "changed): its unit's arm is not the one the experiment counts now")
        issued_at = int(issued_ms) / 1000.0  # signed, so it is the integer we wrote
        age = (time.time() if now is None else now) - issued_at
        if age < -MAX_CLOCK_SKEW_SECONDS:
            raise FutureRequestId(f"request_id is dated {-age:.0f}s in the future, beyond the {MAX_CLOCK_SKEW_SECONDS:.0f}s "
                                  "clock-skew allowance")
        if age > self.ttl_seconds:
            raise ExpiredRequestId(f"request_id expired: issued {age:.0f}s ago, outcomes are accepted for {self.ttl_seconds:.0f}s")
        return RequestId(experiment, arm, issued_at, int(bucket), given)
