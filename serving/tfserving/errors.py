"""One error hierarchy for modelramp, each error with its HTTP status and gRPC code.

Fronts map an error to their protocol once (REST: `{"error": message}` with `http_status`; gRPC:
`context.abort(grpc_code, message)`), so the same failure reads the same way over both.
The codes follow TF Serving's, so a TF Serving client sees what it expects.
"""

from __future__ import annotations

import grpc


class UserFacingError(Exception):
    """An error whose message is meant for the caller; never carries a traceback to them."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL


class InvalidArgument(UserFacingError):
    """Bad request: wrong input name, dtype, shape, malformed body."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(UserFacingError):
    """Unknown model, version, label or signature."""

    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(UserFacingError):
    """The request is well formed but cannot be served in the current state."""

    http_status = 400
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(UserFacingError):
    """A backend or model cannot answer now; retrying later may work."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(UserFacingError):
    """The answer did not come within the deadline."""

    http_status = 504
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(UserFacingError):
    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(UserFacingError):
    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class PayloadTooLarge(InvalidArgument):
    http_status = 413


class Unimplemented(UserFacingError):
    """A method or route that this server does not serve; the message names what it does serve."""

    http_status = 501
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


_BY_GRPC_CODE = {cls.grpc_code: cls for cls in (InvalidArgument, NotFound, FailedPrecondition, Unavailable, DeadlineExceeded,
                                                 Unauthenticated, PermissionDenied, Unimplemented)}


def from_grpc_code(code: grpc.StatusCode, message: str) -> UserFacingError:
    """The modelramp error for a gRPC status received from a server (used by clients)."""
    return _BY_GRPC_CODE.get(code, UserFacingError)(message)


def from_http_status(status: int, message: str) -> UserFacingError:
    """The modelramp error for an HTTP error status received from a server (used by clients)."""
    if status == 413:
        return PayloadTooLarge(message)
    for cls in (InvalidArgument, NotFound, Unavailable, DeadlineExceeded, Unauthenticated, PermissionDenied, Unimplemented):
        if cls.http_status == status:
            return cls(message)
    return UserFacingError(f"HTTP {status}: {message}")
