"""Analysis buckets: a unit's fixed bucket in 0..B-1, independent of its arm, so the analyzer can count by unit.

The hash, exactly (any client or language can reproduce it):

    digest = SHA-256( b"modelramp-analysis-bucket\\x00" + UTF-8(unit_id) )
    bucket = int.from_bytes(digest[:8], "big") % B

The prefix differs from the assignment's salt, so a unit's bucket says nothing about its arm and
every bucket holds units of both arms in the proportion of the weights. It does not depend on
the experiment's salt either: a unit keeps its bucket across experiments and stages. The router
counts exposures and outcomes per (arm, bucket), so one unit's repeated requests all land in
one bucket and the analyzer treats buckets as independent clusters (experiments/stats/clustered.py):
the variance of a difference in rates then includes the correlation between one unit's requests,
which request-level counts ignore. A request without a unit id gets a uniformly random bucket
(it is its own unit). B is `router.analysis_buckets` (router/config.py).
"""

from __future__ import annotations

import random

from router._sha256 import sha256

PREFIX = b"modelramp-analysis-bucket\x00"
MAX_BUCKETS = 1024
_DRAWS = random.Random()  # buckets of requests without a unit id when the caller passes no generator


def analysis_bucket(unit_id: str | None, buckets: int, rng: random.Random | None = None) -> int:
    """The unit's bucket in [0, buckets); without a unit id (None or ""), a uniform draw."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    if buckets == 1:
        return 0
    if not unit_id:
        return (_DRAWS if rng is None else rng).randrange(buckets)
    digest = sha256(PREFIX + unit_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % buckets
