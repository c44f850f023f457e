"""uvicorn's HTTP protocol with a deadline for a request's headers.

uvicorn times nothing before a request's headers are complete: its keep-alive timeout runs only
between requests and restarts with every byte received, and ASGI middleware (the request gate,
gate.py) sees a request only once its headers are in. So a client could open connections and
send nothing, or dribble a header byte now and then (Slowloris), and hold each connection for as
long as it liked. Here a connection must deliver each request's headers within ``seconds`` of
its first byte (of the connection, for the first request); otherwise it is closed, with a
warning. The TLS handshake before it is bounded by asyncio (60 s); the body after it by the gate.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)


def with_header_deadline(seconds: float) -> type[asyncio.Protocol]:
    """An httptools protocol class that closes connections whose headers take over ``seconds``."""

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()  # a connection that sends nothing at all

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:  # the first byte of a later request on this connection
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                client = "%s:%d" % self.client if self.client else "a client"  # noqa: UP031
                log.warning(
                    "api: closing the connection of %s: its request headers did not arrive "
                    "within %g s",
                    client, seconds,
                )  # fmt: skip
                self.transport.close()

    return HeaderDeadlineProtocol
