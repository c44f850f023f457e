"""The FastAPI application, built by :func:`create_app` from its services; no globals.

One handler maps the appliance's errors to HTTP statuses with a KServe v2 error body
(``{"error": message, "hint": what to do}``), so a refusal is a 4xx that says what was wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from appliance.api.deps import ApiServices
from appliance.api.gate import BodyTimeoutError, BodyTooLargeError, RequestGate, Scope
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
DEFAULT_BODY_TIMEOUT_S = 30.0
OPENAPI_URL = "/openapi.json"
# Served without credentials: the schema every refusal's hint points to. Every other route
# authorises its caller (roles.ENTRY_POINTS), health checks too.
PUBLIC = frozenset({OPENAPI_URL})
ROUTES_KNOWN, ROUTE_PATH_MAX = 1024, 256  # the paths whose route is remembered, and how long

STATUS: list[tuple[type[ApplianceError], int]] = [
    (SessionExpiredError, 401), (AuthenticationError, 401), (AccountLockedError, 401),
    (PermissionDeniedError, 403), (ModelNotFoundError, 404), (ResultNotFoundError, 404),
    (BodyTooLargeError, 413), (BodyTimeoutError, 408),
    (UnsupportedMediaError, 415), (InputError, 400), (InferenceError, 400),
    (UnusableSliceError, 400), (AnalysisError, 400), (ModelOutputError, 503),
    (NoModelForTaskError, 503), (StorageError, 503),
]  # fmt: skip

# Why FastAPI could not read a JSON body (the cause of its 400), in words.
UNREADABLE: Mapping[type[BaseException], str] = {
    UnicodeDecodeError: "it is not UTF-8 text",
    RecursionError: "it is nested too deeply",
}


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


def _answer(exc: ApplianceError) -> JSONResponse:
    return _error(status_for(exc), exc.message, exc.hint)


def credentials_needed(routes: Sequence[BaseRoute]) -> Callable[[Scope], bool]:
    """Whether a request goes to one of ``routes`` that authorises its caller: any but PUBLIC's.
    A request no route takes (404) or takes with another method (405) is answered without its
    body or a token, as before."""
    # Matching costs tens of microseconds (every route's pattern); the answer depends on the
    # method and path only, and few of those recur (a model's infer path, a task's).
    known: dict[tuple[str, str], bool] = {}

    def needed(scope: Scope) -> bool:
        key = (scope["method"], scope["path"])
        answer = known.get(key)
        if answer is None:
            answer = key[1] not in PUBLIC and any(
                route.matches(scope)[0] is Match.FULL for route in routes
            )
            if len(known) >= ROUTES_KNOWN:
                known.clear()
            if len(key[1]) <= ROUTE_PATH_MAX:
                known[key] = answer
        return answer

    return needed


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
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    watchdog_s: float | None = None,
    notify: Callable[[str], object] = lambda _state: None,
) -> FastAPI:
    """The API over ``services``; serve it with uvicorn (see appliance.api.server).

    ``body_timeout_s``: a request's body must have arrived this long after its headers (408).
    ``watchdog_s``: ping ``notify("WATCHDOG=1")`` that often from the event loop.
    """
    app = FastAPI(title="Clinical AI appliance", version=services.server_version,
                  docs_url=None, redoc_url=None, openapi_url=OPENAPI_URL,
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

    app.add_middleware(
        RequestGate, limit=max_body_bytes, body_timeout_s=body_timeout_s,
        needs_credentials=credentials_needed(app.router.routes),
        authenticate=services.identity.authenticate, answer=_answer,
    )  # fmt: skip
    return app
