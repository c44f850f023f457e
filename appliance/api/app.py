"""The FastAPI application, built by :func:`create_app` from its services; no globals.

One handler maps the appliance's errors to HTTP statuses with a KServe v2 error body
(``{"error": message, "hint": what to do}``), so a refusal is a 4xx that says what was wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from appliance.api.deps import ApiServices
from appliance.api.results import ResultNotFoundError
from appliance.api.routes import news2, results, tasks, v2
from appliance.api.routes.tasks import NoModelForTaskError
from appliance.api.studies import UnsupportedMediaError
from appliance.api.tensors import InputError
from appliance.dicom.analysis import AnalysisError
from appliance.errors import (
    AccountLockedError,
    ApplianceError,
    AuthenticationError,
    PermissionDeniedError,
    SessionExpiredError,
    StorageError,
)
from appliance.imaging.errors import ModelOutputError, UnusableSliceError
from appliance.inference.errors import InferenceError
from appliance.inference.registry import ModelNotFoundError

log = logging.getLogger(__name__)
DEFAULT_MAX_BODY = 64 << 20


class BodyTooLargeError(InputError):
    """A body without a Content-Length grew past the limit while it was read (answered 413)."""


STATUS: list[tuple[type[ApplianceError], int]] = [
    (SessionExpiredError, 401), (AuthenticationError, 401), (AccountLockedError, 401),
    (PermissionDeniedError, 403), (ModelNotFoundError, 404), (ResultNotFoundError, 404),
    (BodyTooLargeError, 413),
    (UnsupportedMediaError, 415), (InputError, 400), (InferenceError, 400),
    (UnusableSliceError, 400), (AnalysisError, 400), (ModelOutputError, 503),
    (NoModelForTaskError, 503), (StorageError, 503),
]  # fmt: skip

# Why FastAPI could not read a JSON body (the cause of its 400), in words.
UNREADABLE: Mapping[type[BaseException], str] = {
    UnicodeDecodeError: "it is not UTF-8 text",
    RecursionError: "it is nested too deeply",
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def status_for(exc: ApplianceError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def _text(value: str) -> str:
    """``value`` as text UTF-8 can carry: a refusal may quote what the client sent, and JSON lets
    a client send half a surrogate pair ("\\ud800"), which would fail the answer's encoding."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _error(status: int, message: str, hint: str | None = None) -> JSONResponse:
    body: dict[str, str] = {"error": _text(message)}
    if hint:
        body["hint"] = _text(hint)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None  # noqa: PLR2004
    return JSONResponse(body, status_code=status, headers=headers)


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, counting what arrives (chunked too)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _error(413, f"the body has {int(declared)} bytes; at most {self.limit}.",
                         "Send smaller requests.")(scope, receive, send)  # fmt: skip
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


def watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of systemd's WatchdogSec (from WATCHDOG_USEC), or None when there is no watchdog."""
    usec = env.get("WATCHDOG_USEC", "")
    return int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None


def _lifespan(interval: float | None, notify: Callable[[str], object]) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def ping() -> None:
            # From the event loop itself: if a handler blocks the loop, the pings stop and
            # systemd restarts the service.
            while True:
                notify("WATCHDOG=1")
                await asyncio.sleep(interval or 1.0)

        task = asyncio.create_task(ping()) if interval else None
        yield
        if task:
            task.cancel()

    return lifespan


def create_app(
    services: ApiServices,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    watchdog_s: float | None = None,
    notify: Callable[[str], object] = lambda _state: None,
) -> FastAPI:
    """The API over ``services``; serve it with uvicorn (see appliance.api.server).

    ``watchdog_s``: ping ``notify("WATCHDOG=1")`` that often from the event loop.
    """
    app = FastAPI(title="Clinical AI appliance", version=services.server_version,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                  lifespan=_lifespan(watchdog_s, notify))  # fmt: skip
    app.state.services = services
    app.include_router(v2.router)
    app.include_router(tasks.router)
    app.include_router(news2.router)
    app.include_router(results.router)

    @app.exception_handler(ApplianceError)
    async def appliance_error(request: Request, exc: ApplianceError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:  # noqa: PLR2004
            log.error("api: %s %s failed: %s", request.method, request.url.path, exc.message)
        return _error(status, exc.message, exc.hint)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals (a body that is not JSON, an unknown route, a wrong method).
        # FastAPI answers any failure to read a JSON body "There was an error parsing the body",
        # with what failed as the cause: say what it was.
        cause = exc.__cause__
        if isinstance(cause, ApplianceError):  # the body limit, hit while the body was read
            return await appliance_error(request, cause)
        if cause is not None and exc.status_code == 400:  # noqa: PLR2004
            why = UNREADABLE.get(type(cause), type(cause).__name__)
            return _error(400, f"the body cannot be read as JSON: {why}.",
                          "Send a JSON object, UTF-8 encoded (see /openapi.json).")  # fmt: skip
        return _error(exc.status_code, f"{exc.detail}.", "See /openapi.json for the API.")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"the request is invalid at '{where}': {first.get('msg', 'invalid')}.",
                      "See /openapi.json for the request schema.")  # fmt: skip

    app.add_middleware(BodyLimit, limit=max_body_bytes)
    return app
