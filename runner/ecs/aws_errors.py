"""Pure: which failed AWS calls are worth another try, and how to name one in a message.

botocore's own retries (standard mode, 8 attempts) come first; what reaches the launcher has
already outlasted them. Throttling, a 5xx or a 429, and the network (no connection, a
connection closed or timed out) are *transient*: the launcher keeps following the task and
asks again at its next poll. Anything else (denied, unknown cluster, a bad argument) will
answer the same way next time. Duck-typed on botocore's exceptions (``response``,
``operation_name`` and class names), so this module imports no AWS SDK.
"""

from __future__ import annotations

from typing import Any

THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServerError",
        "ServerException",  # ECS's own 5xx
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
#: botocore's exception classes for a network failure (EndpointConnectionError,
#: ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError all derive from these)
NETWORK = frozenset({"ConnectionError", "HTTPClientError"})
DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"})


def error_code(exc: BaseException) -> str:
    """A ClientError's ``Error.Code`` ("" for anything else)."""
    response: Any = getattr(exc, "response", None)
    return str(((response or {}).get("Error") or {}).get("Code") or "")


def transient(exc: BaseException) -> bool:
    """Whether the same call may well succeed a little later."""
    response: Any = getattr(exc, "response", None) or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
    return (
        error_code(exc) in THROTTLING
        or status == 429
        or status >= 500
        or any(cls.__name__ in NETWORK for cls in type(exc).__mro__)
    )


def denied(exc: BaseException) -> bool:
    """A call refused for want of permission."""
    return error_code(exc) in DENIED


def failure_text(exc: BaseException) -> str:
    """``DescribeTasks failed: ThrottlingException: Rate exceeded``, or the exception's own
    words (``Could not connect to the endpoint URL ...``)."""
    operation = getattr(exc, "operation_name", None)
    code = error_code(exc)
    if operation and code:
        message = ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Message", "")
        return f"{operation} failed: {code}: {message}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"
