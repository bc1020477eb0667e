"""Gmail-shaped errors.

Google APIs answer errors with one JSON body:
``{"error": {"code", "message", "errors": [{"message", "domain", "reason"}], "status"}}``.
`GmailError` carries one of those plus any extra response headers (Retry-After,
WWW-Authenticate); the HTTP layer turns it into the response.
"""

from __future__ import annotations

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class GmailError(Exception):
    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None,
        *,
        domain: str = "global",
        status: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.status = status or _STATUS.get(code, "UNKNOWN")
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict:
        if self.reason is None:  # some of Google's front-end errors carry no `errors` list
            return {"error": {"code": self.code, "message": self.message, "status": self.status}}
        item = {"message": self.message, "domain": self.domain, "reason": self.reason}
        item.update(self.extra)
        return {"error": {"code": self.code, "message": self.message, "errors": [item], "status": self.status}}


def bad_request(message: str, reason: str = "invalidArgument") -> GmailError:
    return GmailError(400, message, reason)


def invalid_value(field: str, proto_type: str, value: str) -> GmailError:
    return GmailError(400, f"Invalid value at '{field}' ({proto_type}), \"{value}\"", "invalid")


def not_found(message: str = "Requested entity was not found.") -> GmailError:
    return GmailError(404, message, "notFound")


def unauthenticated() -> GmailError:
    return GmailError(
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
        "or other valid authentication credential. See "
        "https://developers.google.com/identity/sign-in/web/devconsole-project.",
        "authError",
        extra={"location": "Authorization", "locationType": "header"},
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
    )


def forbidden(message: str, reason: str = "forbidden") -> GmailError:
    return GmailError(403, message, reason)


def insufficient_scopes() -> GmailError:
    return GmailError(
        403, "Request had insufficient authentication scopes.", "insufficientPermissions",
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="insufficient_scope"'},
    )


def backend_error() -> GmailError:
    return GmailError(500, "Internal error encountered.", "backendError")


class OAuthError(Exception):
    """An OAuth 2.0 token-endpoint error: ``{"error", "error_description"}`` (RFC 6749 §5.2)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict:
        return {"error": self.error, "error_description": self.description}


def project_rate_limited(project_number: int) -> GmailError:
    """Gmail's answer once a Cloud project has spent its quota units for the minute.

    Google names the quota and the consumer project (by number) and no retry time."""
    message = ("Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of service "
               f"'gmail.googleapis.com' for consumer 'project_number:{project_number}'.")
    return GmailError(429, message, "rateLimitExceeded", domain="usageLimits", status="RESOURCE_EXHAUSTED")
