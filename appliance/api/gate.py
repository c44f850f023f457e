"""The request gate: what the ASGI layer refuses before a route runs, and what it bounds after.

A route reads its whole body (up to the limit) before it does anything, and FastAPI parses a JSON
body before the handler that checks the caller. So the gate, around the app, refuses a request
that could never pass before any of its body is read: one whose declared length is over the limit
(413), or one with a body, to a route that needs credentials, whose bearer token is missing or
not accepted by the identity service (401; without a body the route's own check comes as soon,
and the gate spares the request a thread hop). It answers such refusals with ``Connection:
close``: the rest of the body is never read, and the connection is not left to the client. The
route still authorises the caller (the token again, a cached lookup; the permission; the audit
of a denial).

Then it bounds the body the route reads: over the limit, counted as it arrives (chunked too), is
a 413; not complete within the body timeout of those checks (begun or not) is a 408, answered
with ``Connection: close`` and logged as a warning (who, what, how much came in how long). Both
are raised to the route as errors, which the app's handlers answer. Once the body is complete,
the route may take as long as it needs.

A client that hangs up before its body is complete (a PACS that gives up, a load generator at the
end of its run) is no fault of the box's: nothing of the request ran, nobody waits for an answer.
Starlette raises ``ClientDisconnect`` through the route; the gate ends the request there with one
INFO line (who, what, how much came), where uvicorn would log a traceback as for a bug.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect

from appliance.api.deps import bearer_token
from appliance.api.tensors import InputError
from appliance.errors import ApplianceError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(__name__)
PATH_LOGGED = 256  # characters of a request's path that a log line quotes


class BodyTooLargeError(InputError):
    """A body is over the limit: declared so, or grown past it while it was read (413)."""


class BodyTimeoutError(ApplianceError):
    """A body did not arrive completely within the body timeout (answered 408)."""


class RequestGate:
    """Refuse, before the body is read: a declared body over ``limit`` bytes, and a caller whose
    token ``authenticate`` does not accept on a route where ``needs_credentials``; then bound
    the body the route reads to ``limit`` bytes, complete ``body_timeout_s`` after those checks.

    ``authenticate`` may block (it reads and may write the identity database, and audit an idle
    session's logoff): it runs in the threadpool. ``answer`` turns a refusal into a response.
    """

    def __init__(
        self, app: ASGIApp, *, limit: int, body_timeout_s: float,
        needs_credentials: Callable[[Scope], bool], authenticate: Callable[[str], object],
        answer: Callable[[ApplianceError], ASGIApp],
    ) -> None:  # fmt: skip
        self.app, self.limit, self.body_timeout_s, self.answer = app, limit, body_timeout_s, answer
        self.needs_credentials, self.authenticate = needs_credentials, authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)  # parsed once for the checks below
        refusal = self._declared_too_large(headers) or await self._caller_refused(scope, headers)
        if refusal is not None:
            await self.answer(refusal)(scope, receive, _closing(send))
            return
        # From now, not from the headers: a caller's check that waited for a busy threadpool is
        # no fault of the client's (its body waits meanwhile in uvicorn's bounded buffer).
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        body = _Body(receive, self.limit, deadline, self.body_timeout_s, scope, headers)
        try:
            await self.app(scope, body.receive, body.send_to(send))
        except ClientDisconnect:
            if not body.gone:
                raise  # not the body's disconnect: a route's own affair, reported as it is
        if body.gone:  # raised, or turned into an answer nobody reads (FastAPI's 400)
            log.info("api: the client of %s went away after %s; nothing of the request ran",
                     *body.described())  # fmt: skip

    def _declared_too_large(self, headers: Headers) -> ApplianceError | None:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return BodyTooLargeError(
                f"the body has {int(declared)} bytes; at most {self.limit}.",
                "Send smaller requests.",
            )
        return None

    async def _caller_refused(self, scope: Scope, headers: Headers) -> ApplianceError | None:
        """Why the caller can never pass the route's check, or None (also when it needs none)."""
        if not self.needs_credentials(scope) or not _has_body(headers):
            return None  # a request without a body costs nothing to read: the route checks it
        try:
            await run_in_threadpool(self.authenticate, bearer_token(headers))
        except ApplianceError as exc:
            return exc
        return None


class _Body:
    """The request's ``receive`` bounded: at most ``limit`` bytes, all of them by ``deadline``
    (the event loop's clock). ``scope`` and ``headers`` name the request in the warning when its
    body comes too late; a request that announces no body has it complete from the start."""

    def __init__(
        self, receive: Receive, limit: int, deadline: float, timeout_s: float, scope: Scope,
        headers: Headers,
    ) -> None:  # fmt: skip
        self._receive, self.limit = receive, limit
        self.deadline, self.timeout_s = deadline, timeout_s
        self.scope, self.declared = scope, headers.get("content-length")
        self.seen = 0
        self.complete = not _has_body(headers)
        self.expired = False
        self.gone = False  # the client hung up before the body was complete

    async def receive(self) -> Message:
        if self.complete:  # after the body: only a disconnect comes, whenever it comes
            return await self._receive()
        if self.expired:
            raise self._late()
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self._receive()
        except TimeoutError:
            self.expired = True
            self._log_late()
            raise self._late() from None
        if message["type"] == "http.disconnect":
            self.gone = True
        self.seen += len(message.get("body", b""))
        if self.seen > self.limit:
            raise BodyTooLargeError(
                f"the body is over {self.limit} bytes; the API takes at most that.",
                "Send smaller requests.",
            )
        self.complete = message["type"] != "http.request" or not message.get("more_body")
        return message

    def _late(self) -> BodyTimeoutError:
        return BodyTimeoutError(
            f"the body did not arrive within {self.timeout_s:g} s; {self.seen} bytes of it came.",
            "Send the whole body right after the headers; over a slow link, ask an admin to "
            "raise api_body_timeout_seconds in the box's configuration.",
        )

    def _log_late(self) -> None:
        """Warn of the 408 (see :meth:`described`)."""
        request, came = self.described()
        took = asyncio.get_running_loop().time() - (self.deadline - self.timeout_s)
        log.warning("api: answering 408 to %s and closing the connection: %s arrived in %.1f s",
                    request, came, took)  # fmt: skip

    def described(self) -> tuple[str, str]:
        """The request for a log line (the method and path, the client) and how much of its body
        came. Never the body, nor the query string: either may carry PHI."""
        address = self.scope.get("client")
        client = "%s:%d" % address if address else "a client"  # noqa: UP031
        # uvicorn percent-decodes the path: escaped, a "%0A" in it cannot start a forged line.
        path = self.scope["path"][:PATH_LOGGED].encode("unicode_escape").decode("ascii")
        declared = (self.declared or "").strip()
        came = (
            f"{self.seen} of the {int(declared)} announced body bytes"
            if declared.isascii() and declared.isdigit()
            else f"{self.seen} body bytes (no length announced)"
        )
        return f"{self.scope['method']} {path} from {client}", came

    def send_to(self, send: Send) -> Send:
        """``send`` that closes the connection after an answer sent before the whole body was
        read: the body came too late, was over the limit, or the route answered without reading
        it (a GET with a body). What the client still sends of it is never read; a client that
        trickled it would otherwise hold the connection, every byte restarting uvicorn's
        keep-alive timer."""

        async def sending(message: Message) -> None:
            await (send if self.complete else _closing(send))(message)

        return sending


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    return "transfer-encoding" in headers or (
        length is not None and length.strip() not in ("", "0")
    )


def _closing(send: Send) -> Send:
    """``send`` with ``Connection: close`` on the answer (uvicorn then closes the connection)."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", []), (b"connection", b"close")]
            message = {**message, "headers": headers}
        await send(message)

    return closing
