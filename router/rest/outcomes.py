"""REST outcome reports, as `router.rest.server` answers them: `POST /v1/outcomes` beside predict, not through ASGI.

Why not through the FastAPI app: under outcome load (loadtests/bench_ledger.py --predict, 2,000
outcomes a second in reports of 20) a profile of the router showed the app's middleware stack
taking about as much of the event loop as verifying and recording the reports themselves, and
that loop also answers predict. The body limit is the server's; the answer is the app's was:
`{"accepted": n, "duplicates": m}`, or `{"error": message}` with the error's status, and 503 with
`Retry-After` while the outcome ledger cannot be written (nothing was counted: retrying is safe).
The route is documented with the others (`router.rest.openapi.OUTCOMES_OPENAPI_PATH`).
"""

from __future__ import annotations

import json

from router.core import Router
from router.ledger import LedgerUnavailable
from router.rest.json_codec import parse_body
from serving.tfserving import errors

OUTCOMES_PATH = b"/v1/outcomes"


async def answer_outcomes(router: Router, body: bytes) -> tuple[int, bytes, bytes]:
    """One outcome report: (status, JSON body, extra header lines, as `router.rest.predict.answer_predict` gives them)."""
    try:
        result = await router.outcomes.report(parse_body(body))
    except errors.UserFacingError as err:
        lines = b"retry-after: %d\r\n" % err.retry_after if isinstance(err, LedgerUnavailable) else b""
        return err.http_status, json.dumps({"error": str(err)}).encode(), lines
    return 200, b'{"accepted":%d,"duplicates":%d}' % (result.accepted, result.duplicates), b""
