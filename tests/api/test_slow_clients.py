"""Clients on the clinic LAN that announce large bodies and send them slowly, or not at all,
against the real served API over raw TLS sockets: nobody without a valid token gets the server
to read a body, and nobody holds a connection and its buffered body longer than the bound."""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import re
import select
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from appliance.audit.records import AuditEvent
from appliance.config import Config
from appliance.identity.roles import Role

from .conftest import Served
from .test_api import FEATURES, v2_body

ANNOUNCED = 60_000_000  # under the 64 MiB limit: only the caller is wrong
# The routes that take a body; the studies route already checked its caller first.
BODY_ROUTES = [
    "/v2/models/risk-demo/infer", "/v1/tasks/risk-score", "/v1/tasks/notes",
    "/v1/tasks/risk-score/news2",
]  # fmt: skip
# A body cut short: half of it sent, or none; on a route of each kind (v2, task, studies).
BODY_STOPS = pytest.mark.parametrize(
    "sent", [0.5, 0.0], ids=["stops-mid-body", "body-never-starts"]
)
STALLED_ROUTES = pytest.mark.parametrize(
    "path", ["/v2/models/risk-demo/infer", "/v1/tasks/risk-score", "/v1/tasks/studies"]
)
WAIT_S = 10.0  # how long a test waits for an answer the server owes it now
BODY_TIMEOUT_S = 2.0  # api_body_timeout_seconds on the served box


@pytest.fixture
def config(config: Config) -> Config:
    return dataclasses.replace(config, api_body_timeout_seconds=BODY_TIMEOUT_S)


@pytest.fixture
def sockets(served: Served) -> Iterator[list[ssl.SSLSocket]]:
    """Connections opened by :func:`connect`, closed after the test."""
    opened: list[ssl.SSLSocket] = []
    yield opened
    for sock in opened:
        sock.close()


def connect(served: Served, opened: list[ssl.SSLSocket]) -> ssl.SSLSocket:
    """A TLS connection to the API, as a client that imported the site certificate."""
    assert served.api.tls is not None
    ctx = ssl.create_default_context(cafile=str(served.api.tls.cert))
    raw = socket.create_connection(("127.0.0.1", served.api.port), timeout=WAIT_S)
    sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    opened.append(sock)
    return sock


def start_request(
    sock: ssl.SSLSocket, path: str, length: int, authorization: str | None, first: bytes
) -> None:
    """Send a POST's headers announcing ``length`` bytes of body, and only ``first`` of them."""
    head = [f"POST {path} HTTP/1.1", "Host: appliance", "Content-Type: application/json",
            f"Content-Length: {length}"]  # fmt: skip
    if authorization is not None:
        head.append(f"Authorization: {authorization}")
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + first)


def answer(sock: ssl.SSLSocket) -> tuple[int, dict[str, str], dict[str, str]]:
    """The status, headers and JSON body of the server's answer (socket.timeout if none comes)."""
    response = http.client.HTTPResponse(sock, method="POST")  # type: ignore[arg-type]
    response.begin()
    headers = {k.lower(): v for k, v in response.getheaders()}
    return response.status, headers, json.loads(response.read())


def closed_by_server(sock: ssl.SSLSocket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_an_unauthenticated_large_body_is_refused_before_it_is_sent(
    served: Served, sockets: list[ssl.SSLSocket], path: str
) -> None:
    """The routes parsed a body of up to 64 MiB before they checked the caller: anyone on the
    LAN could hold that much memory per connection, and the connection, by sending slowly."""
    sock = connect(served, sockets)
    start_request(sock, path, ANNOUNCED, None, b'{"inputs": [')
    status, headers, body = answer(sock)  # the 60 MB were never sent
    assert status == 401, body
    assert "bearer token" in body["error"] and "Authorization: Bearer" in body["hint"]
    assert headers["www-authenticate"] == "Bearer"
    assert headers["connection"] == "close" and closed_by_server(sock)


@pytest.mark.parametrize(
    "authorization",
    ["Basic dXNlcjpwYXNz", "Bearer", "Bearer not-a-token", "Bearer apl_0123456789ab_guessed"],
    ids=["basic", "empty", "malformed", "unknown"],
)
@pytest.mark.parametrize("path", ["/v2/models/risk-demo/infer", "/v1/tasks/risk-score"])
def test_a_bad_token_with_a_large_body_is_refused_before_it_is_sent(
    served: Served, sockets: list[ssl.SSLSocket], path: str, authorization: str
) -> None:
    sock = connect(served, sockets)
    start_request(sock, path, ANNOUNCED, authorization, b"{")
    status, _, body = answer(sock)
    assert status == 401, body
    assert body["error"] in ("this request carries no bearer token.", "that token is not valid.")
    assert body["hint"]
    assert closed_by_server(sock)


def test_a_revoked_token_with_a_large_body_is_refused_before_it_is_sent(
    served: Served, sockets: list[ssl.SSLSocket]
) -> None:
    with served.client() as http_client:  # the token worked, and its lookup is cached
        ok = http_client.post("/v2/models/risk-demo/infer", json=v2_body(FEATURES))
        assert ok.status_code == 200, ok.text
    token_id = served.tokens[Role.SERVICE].split("_")[1]
    admin = served.rt.identity.authenticate(served.tokens[Role.ADMIN])
    served.rt.identity.revoke(admin, token_id)
    sock = connect(served, sockets)
    start_request(sock, "/v2/models/risk-demo/infer", ANNOUNCED,
                  f"Bearer {served.tokens[Role.SERVICE]}", b"{")  # fmt: skip
    status, _, body = answer(sock)
    assert status == 401 and "ended or revoked" in body["error"], body


def test_an_idle_session_is_logged_off_once_and_refused_before_its_body(
    served: Served, sockets: list[ssl.SSLSocket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The early refusal is the request's only authentication failure: the idle logoff is audited
    once (by the identity service, as before), and no permission denial follows."""
    before = len(list(served.rt.audit.records()))
    later = time.time() + 3600  # past the clinician session's idle time
    monkeypatch.setattr(served.rt.identity, "clock", lambda: later)
    sock = connect(served, sockets)
    start_request(sock, "/v1/tasks/notes", ANNOUNCED, f"Bearer {served.tokens[Role.CLINICIAN]}",
                  b'{"text": "')  # fmt: skip
    status, _, body = answer(sock)
    assert status == 401 and "logged off" in body["error"], body
    new = list(served.rt.audit.records())[before:]
    assert [(r.event, r.actor, r.detail.get("why")) for r in new] == [
        (AuditEvent.LOGOUT, "user-clinician", "idle")
    ]


@pytest.mark.parametrize("path", ["/v2/models/risk-demo", "/v1/results/no-such-request"])
def test_a_body_the_route_does_not_read_closes_the_connection_after_the_answer(
    served: Served, sockets: list[ssl.SSLSocket], path: str
) -> None:
    """A GET that announces a body is answered without reading it. uvicorn kept the connection
    for the body's rest, and each byte trickled restarted its keep-alive timer: a client held the
    connection as long as it liked."""
    sock = connect(served, sockets)
    head = [f"GET {path} HTTP/1.1", "Host: appliance", "Content-Length: 100000",
            f"Authorization: Bearer {served.tokens[Role.SERVICE]}"]  # fmt: skip
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + b"x")
    response = http.client.HTTPResponse(sock, method="GET")  # type: ignore[arg-type]
    response.begin()
    response.read()
    assert response.status in (200, 404), response.status
    assert response.getheader("connection") == "close"
    sock.sendall(b"x")  # the trickle goes on: the server has closed, it restarts no timer
    assert closed_by_server(sock)


def test_a_body_read_whole_keeps_the_connection_alive(served: Served) -> None:
    with served.client() as http_client:
        for _ in range(2):
            ok = http_client.post("/v2/models/risk-demo/infer", json=v2_body(FEATURES))
            assert ok.status_code == 200 and ok.headers.get("connection") != "close", ok.headers
        assert http_client.get("/v2/models/risk-demo").headers.get("connection") != "close"


def infer_body() -> bytes:
    return json.dumps(v2_body(FEATURES)).encode()


def assert_served(served: Served) -> None:
    """Other clients get their answers."""
    with served.client() as http_client:
        assert http_client.get("/v2/health/live").status_code == 200
        answer = http_client.post("/v2/models/risk-demo/infer", json=v2_body(FEATURES))
        assert answer.status_code == 200, answer.text


@BODY_STOPS
@STALLED_ROUTES
def test_a_body_that_stops_arriving_is_a_408_and_others_are_served_meanwhile(
    served: Served, sockets: list[ssl.SSLSocket], path: str, sent: float
) -> None:
    """An authenticated client that announced its body and then stopped sending held the
    connection and what it had sent for as long as it liked."""
    body = infer_body()
    stalled = [connect(served, sockets) for _ in range(3)]
    for sock in stalled:
        start_request(sock, path, len(body), f"Bearer {served.tokens[Role.SERVICE]}",
                      body[: int(len(body) * sent)])  # fmt: skip
    assert_served(served)  # while those wait for their bodies
    for sock in stalled:
        status, headers, answered = answer(sock)
        assert status == 408, answered
        assert f"did not arrive within {BODY_TIMEOUT_S:g} s" in answered["error"], answered
        assert "api_body_timeout_seconds" in answered["hint"]
        assert headers["connection"] == "close" and closed_by_server(sock)
    assert_served(served)


def test_a_408_is_logged_naming_the_client_the_request_and_how_much_came(
    served: Served, sockets: list[ssl.SSLSocket], caplog: pytest.LogCaptureFixture
) -> None:
    """A body that came too late was refused without a word in the log: an admin could not tell
    a slow link or a stalled client from a quiet day. Nothing of the body, nor the query string,
    is in the line: either may carry PHI."""
    mrn = "MRN-40917733"
    body = json.dumps({"parameters": {"subject_id": mrn}, **v2_body(FEATURES)}).encode()
    half = len(body) // 2
    assert mrn.encode() in body[:half]
    token = f"Bearer {served.tokens[Role.SERVICE]}"
    with caplog.at_level(logging.WARNING, logger="appliance.api.gate"):
        announced = connect(served, sockets)
        start_request(announced, f"/v2/models/risk-demo/infer?mrn={mrn}", len(body), token,
                      body[:half])  # fmt: skip
        chunked = connect(served, sockets)  # no length announced
        chunked.sendall(f"POST /v1/tasks/risk-score HTTP/1.1\r\nHost: appliance\r\n"
                        f"Authorization: {token}\r\nContent-Type: application/json\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"fea\r\n".encode())  # fmt: skip
        assert answer(announced)[0] == 408 and answer(chunked)[0] == 408
    records = [r for r in caplog.records if r.name == "appliance.api.gate"]
    lines = [r.getMessage() for r in records]
    assert len(lines) == 2 and {r.levelno for r in records} == {logging.WARNING}, lines
    for sock, request, came in [
        (announced, "POST /v2/models/risk-demo/infer", f"{half} of the {len(body)} announced"),
        (chunked, "POST /v1/tasks/risk-score", "5 body bytes (no length announced)"),
    ]:
        host, port = sock.getsockname()[:2]
        line = next((x for x in lines if f"{request} from {host}:{port}" in x), "")
        assert "408" in line and came in line and "arrived in" in line, lines
        took = re.search(r"arrived in (\d+\.\d) s", line)
        assert took and BODY_TIMEOUT_S - 0.1 <= float(took[1]) < WAIT_S, line
    assert mrn not in caplog.text and "mrn=" not in caplog.text


def test_a_slow_body_within_the_bound_is_served_and_a_trickle_past_it_is_not(
    served: Served, sockets: list[ssl.SSLSocket]
) -> None:
    """The bound is on the whole body, not on each pause: a client that keeps sending a byte at
    a time never pauses long, and is still cut off at the bound. One that sends its body in
    pieces within the bound gets its answer."""
    token = f"Bearer {served.tokens[Role.SERVICE]}"
    body = infer_body()
    slow = connect(served, sockets)
    start_request(slow, "/v2/models/risk-demo/infer", len(body), token, b"")
    pieces = [body[i : i + len(body) // 4 + 1] for i in range(0, len(body), len(body) // 4 + 1)]
    for piece in pieces:  # about half a second in all, against a bound of two
        time.sleep(0.1)
        slow.sendall(piece)
    status, _, answered = answer(slow)
    assert status == 200 and answered["outputs"], answered

    trickle = connect(served, sockets)
    start_request(trickle, "/v2/models/risk-demo/infer", 10_000, token, b"{")
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        readable, _, _ = select.select([trickle], [], [], 0.2)
        if readable:
            break
        trickle.sendall(b" ")
    status, _, answered = answer(trickle)
    assert status == 408, answered


def test_a_connection_that_sends_no_request_is_closed_and_others_are_served(
    served: Served, sockets: list[ssl.SSLSocket]
) -> None:
    """uvicorn timed nothing before a request's headers: a connection that sent nothing after
    the TLS handshake stayed open for good, so enough of them used up the server's sockets."""
    silent = [connect(served, sockets) for _ in range(3)]
    assert_served(served)  # while those say nothing
    for sock in silent:  # recv would raise socket.timeout after WAIT_S if they stayed open
        assert closed_by_server(sock)


@pytest.mark.parametrize("after_a_request", [False, True], ids=["first", "keep-alive"])
def test_headers_sent_a_byte_at_a_time_are_cut_off(
    served: Served, sockets: list[ssl.SSLSocket], after_a_request: bool
) -> None:
    """Slowloris: each byte restarted uvicorn's only timer (keep-alive), so a header line sent a
    byte every 0.2 s held the connection as long as the client liked; on a kept-alive
    connection too, after a request that was answered."""
    sock = connect(served, sockets)
    if after_a_request:
        body = infer_body()
        start_request(sock, "/v2/models/risk-demo/infer", len(body),
                      f"Bearer {served.tokens[Role.SERVICE]}", body)  # fmt: skip
        assert answer(sock)[0] == 200
    sock.sendall(b"POST /v1/tasks/risk-score HTTP/1.1\r\nHost: appliance\r\n")
    closed = False
    deadline = time.monotonic() + WAIT_S
    while not closed and time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            closed = closed_by_server(sock)
            break
        try:
            sock.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            closed = True
    assert closed, f"the server still reads headers after {WAIT_S:g} s"
    assert_served(served)


@BODY_STOPS
@STALLED_ROUTES
def test_a_client_gone_before_its_body_is_complete_is_one_log_line_not_a_traceback(
    served: Served,
    sockets: list[ssl.SSLSocket],
    caplog: pytest.LogCaptureFixture,
    path: str,
    sent: float,
) -> None:
    """A load generator that stops (wrk at the end of its run) or a PACS that hangs up closes
    connections in the middle of a body. Starlette raised ClientDisconnect through the app, and
    uvicorn logged "Exception in ASGI application" with a 60-line traceback, as for a bug: the
    journal of a box with a flaky client filled with false alarms. Nothing of the request ran."""
    body = infer_body()
    before = len(list(served.rt.audit.records()))
    with caplog.at_level(logging.INFO):
        sock = connect(served, sockets)
        start_request(sock, path, len(body), f"Bearer {served.tokens[Role.SERVICE]}",
                      body[: int(len(body) * sent)])  # fmt: skip
        host, port = sock.getsockname()[:2]
        time.sleep(0.2)  # the request reaches the route, which waits for the body's rest
        sock.close()
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and "went away" not in caplog.text:
            time.sleep(0.05)
        new = list(served.rt.audit.records())[before:]
        assert_served(served)
    assert not new, [(r.event, r.actor) for r in new]  # nothing ran, so nothing is recorded
    gone = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.INFO, caplog.text
    line = gone[0].getMessage()
    assert f"POST {path} from {host}:{port}" in line, line
    assert f"after {int(len(body) * sent)} of the {len(body)} announced body bytes" in line, line
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert "Traceback" not in caplog.text
