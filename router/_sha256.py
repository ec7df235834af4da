"""SHA-256 for the per-request work (assignment hash, request-id HMAC): CPython's own, not OpenSSL's.

Both give the same digests (the golden assignment cases and the HMAC test check it). They differ in
what a call costs on a router that is woken for each request: OpenSSL 3 sets up a provider
context per hash, which is a lot of code and memory to bring back into the caches every time.
With a 2 ms sleep before each request, alternating the two request by request
(`python loadtests/bench_router_sections.py`, `idle_gap_2ms` rows), the assignment costs
11-13 us against 22-25 us and the request id 15-18 us against 20-25 us; back to back they
differ by 1-2 us. The module's name changed in Python 3.12 (`_sha256` -> `_sha2`), and a
build without it falls back to hashlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # typeshed has no stubs for CPython's private hash modules; theirs is hashlib's interface.
    from hashlib import sha256
else:
    try:
        from _sha2 import sha256  # CPython 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # CPython 3.11 and earlier
        except ImportError:  # pragma: no cover - a build without CPython's own hashes
            from hashlib import sha256

__all__ = ["sha256"]
