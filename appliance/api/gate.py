"""The request gate: what the ASGI layer refuses before a route runs, and what it bounds after.

A route reads its whole body (up to the limit) before it does anything, and FastAPI parses a JSON
body before the handler that checks the caller. So the gate, around the app, refuses a request
that could never pass before any of its body is read: one whose declared length is over the limit
(413), or one to a route that needs credentials whose bearer token is missing or not accepted by
the identity service (401). It answers such refusals with ``Connection: close``: the rest of the
body is never read, and the connection is not left to the client. The route still authorises the
caller (the token again, a cached lookup; the permission; the audit of a denial).

Then it counts the body the route reads as it arrives (chunked too): over the limit is a 413,
raised to the route as an error, which the app's handlers answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from appliance.api.deps import bearer_token
from appliance.api.tensors import InputError
from appliance.errors import ApplianceError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLargeError(InputError):
    """A body is over the limit: declared so, or grown past it while it was read (413)."""


class RequestGate:
    """Refuse, before the body is read: a declared body over ``limit`` bytes, and a caller whose
    token ``authenticate`` does not accept on a route where ``needs_credentials``; then count the
    body as it arrives (chunked too) and refuse it once it grows past ``limit``.

    ``authenticate`` may block (it reads and may write the identity database, and audit an idle
    session's logoff): it runs in the threadpool. ``answer`` turns a refusal into a response.
    """

    def __init__(
        self, app: ASGIApp, *, limit: int, needs_credentials: Callable[[Scope], bool],
        authenticate: Callable[[str], object], answer: Callable[[ApplianceError], ASGIApp],
    ) -> None:  # fmt: skip
        self.app, self.limit, self.answer = app, limit, answer
        self.needs_credentials, self.authenticate = needs_credentials, authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._declared_too_large(scope) or await self._caller_refused(scope)
        if refusal is not None:
            await self.answer(refusal)(scope, receive, _closing(send))
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLargeError(
                    f"the body is over {self.limit} bytes; the API takes at most that.",
                    "Send smaller requests.",
                )
            return message

        await self.app(scope, counted, send)

    def _declared_too_large(self, scope: Scope) -> ApplianceError | None:
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return BodyTooLargeError(
                f"the body has {int(declared)} bytes; at most {self.limit}.",
                "Send smaller requests.",
            )
        return None

    async def _caller_refused(self, scope: Scope) -> ApplianceError | None:
        """Why the caller can never pass the route's check, or None (also when it needs none)."""
        if not self.needs_credentials(scope):
            return None
        try:
            await run_in_threadpool(self.authenticate, bearer_token(Headers(scope=scope)))
        except ApplianceError as exc:
            return exc
        return None


def _closing(send: Send) -> Send:
    """``send`` with ``Connection: close`` on the answer (uvicorn then closes the connection)."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", []), (b"connection", b"close")]
            message = {**message, "headers": headers}
        await send(message)

    return closing
