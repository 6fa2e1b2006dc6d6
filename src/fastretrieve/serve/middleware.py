"""ASGI middleware: the request body limit, and per-request metrics."""

from __future__ import annotations

import json
import time

from fastapi import HTTPException

from .metrics import Metrics

# Error kinds of /metrics, by status.
ERROR_KINDS = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media",
    422: "invalid", 503: "unavailable",
}


class BodyTooLarge(HTTPException):
    """A request body beyond the service's limit (413)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than the limit of {limit} bytes")


class BodyLimit:
    """Refuses bodies over ``limit`` bytes: at once from Content-Length, else as the body
    streams in (chunked uploads), so no more than the limit is ever read."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            detail = "request body larger than the limit of %d bytes" % self.limit
            if not length.isdigit():
                detail = "invalid Content-Length header"
            body = json.dumps({"detail": detail}).encode()
            status = 413 if length.isdigit() else 400
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                (b"connection", b"close"),
            ]})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)


class RequestMetrics:
    """Counts each request by route and status and times it."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.observe_request(path, scope["method"], status, time.perf_counter() - start)
            if status >= 400:
                self.metrics.count_error(ERROR_KINDS.get(status, "internal" if status >= 500 else "other"))
