"""The gRPC server's interceptors, one concern each, in the order they run.

The first is outermost: each wraps every one after it, and all of them wrap
the servicer's method (`mailwatch.api.handlers` is the one helper they
wrap a handler with):

1. `request_context`: the request id, before any other code of the call;
2. `access_log`: how a failed call ended (code and details);
3. `errors`: any exception -> its status (`mailwatch.api.errors`), so a
   refused key, an undecodable request and a servicer's failure end alike;
4. `decoding`: the request bytes -> the request message (INVALID_ARGUMENT
   when they are not one), before anything reads it;
5. `auth`: the API key or operator token; sets the tenant id;
6. `rate_limit`: each API key's call rate (RESOURCE_EXHAUSTED past it).

    server = grpc.aio.server(interceptors=server_interceptors(AuthInterceptor(sessions, operator_token=...),
                                                              RateLimitInterceptor(usage_limits)))
"""

from __future__ import annotations

import grpc

from mailwatch.api.interceptors.access_log import AccessLogInterceptor
from mailwatch.api.interceptors.auth import AuthInterceptor
from mailwatch.api.interceptors.decoding import DecodingInterceptor
from mailwatch.api.interceptors.errors import ErrorInterceptor
from mailwatch.api.interceptors.rate_limit import RateLimitInterceptor
from mailwatch.api.interceptors.request_context import RequestContextInterceptor


def server_interceptors(
    auth: AuthInterceptor | None, rate_limit: RateLimitInterceptor | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors in order, outermost first; without `auth` (tests of the
    others), a call runs unauthenticated; without `rate_limit`, unlimited."""
    ordered: list[grpc.aio.ServerInterceptor] = [
        RequestContextInterceptor(),
        AccessLogInterceptor(),
        ErrorInterceptor(),
        DecodingInterceptor(),
    ]
    if auth is not None:
        ordered.append(auth)
        if rate_limit is not None:
            ordered.append(rate_limit)
    return ordered


__all__ = ["AuthInterceptor", "RateLimitInterceptor", "server_interceptors"]
