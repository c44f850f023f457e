"""What the API's stack costs with no work in it, and where the API's own CPU goes.

Two parts of bench/inference.py's API rows:

- **The floor.** The same uvicorn (uvloop, httptools with the header deadline, the box's site
  certificate) serves two apps that do nothing: a bare ASGI app, and FastAPI with one route. Each
  reads the request's body and answers a body as long as the API's real answer. wrk drives them as
  it drives the API, so the API's rows minus the floor's are what the API's own work costs (the
  token check, decoding, the audit record, the result row, thread hand-offs), not TLS or HTTP.
- **The API's CPU by thread.** Around the API's 16-client run, the CPU each of this process's
  threads used, grouped by role (the event loop, the worker threads that decode and infer, the
  two group committers, OpenVINO's own threads), per request.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from _inference_common import API_CLIENTS, Row, Settings, progress
from _inference_peers import WrkResult, run_wrk
from fastapi import FastAPI, Request, Response

from appliance.api.server import uvicorn_config
from appliance.api.tls import SiteCertificate

# Python thread names (threading.Thread.name) by role; a thread no role names is counted as
# "other Python"; threads Python did not start (OpenVINO's) as native.
ROLES = (
    ("api", "event loop: TLS, HTTP, FastAPI, the gate, awaiting the commits"),
    ("AnyIO worker thread", "worker threads: token check, decode, inference, encode"),
    ("audit-commit", "audit group committer"),
    ("audit-fsync", "audit group committer's fsync thread"),
    ("results-commit", "result-row group committer"),
    ("floor", "the floor's server"),
)
NATIVE = "native threads (OpenVINO's own inference threads)"
OTHER = "other Python threads"


def thread_ticks() -> Counter[str]:
    """CPU clock ticks each role's threads have used so far (see :data:`ROLES`)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    used: Counter[str] = Counter()
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(tid))
        role = NATIVE if name is None else next(
            (label for prefix, label in ROLES if name.startswith(prefix)), OTHER)  # fmt: skip
        used[role] += int(fields[11]) + int(fields[12])  # utime + stime
    return used


@contextlib.contextmanager
def cpu_by_role() -> Iterator[Counter[str]]:
    """Yields a Counter filled, on exit, with the ticks each role used inside the block."""
    before = thread_ticks()
    used: Counter[str] = Counter()
    yield used
    after = thread_ticks()
    for role, ticks in after.items():
        used[role] = max(ticks - before.get(role, 0), 0)


def role_rows(used: Mapping[str, int], requests: int) -> list[Row]:
    """One row per role: CPU-ms a request, largest first."""
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    total = sum(used.values()) * tick_ms / max(requests, 1)
    rows = [Row(f"  API process CPU a request, {API_CLIENTS} clients: all threads",
                note=f"{total:.2f} CPU-ms (from /proc, {tick_ms:.0f} ms ticks)")]  # fmt: skip
    for role, ticks in used.most_common():
        if ticks:
            share = ticks * tick_ms / max(requests, 1)
            rows.append(Row(f"    {role}", note=f"{share:.2f} CPU-ms"))
    return rows


def _bare(answer: bytes) -> Any:
    headers = [(b"content-type", b"application/octet-stream"),
               (b"content-length", str(len(answer)).encode())]  # fmt: skip

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def _fastapi(path: str, answer: bytes) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post(path)
    async def infer(request: Request) -> Response:
        await request.body()
        return Response(answer, media_type="application/octet-stream")

    return app


@contextlib.contextmanager
def _served(app: Any, tls: SiteCertificate) -> Iterator[int]:
    """``app`` on a loopback port, configured as appliance.api.server configures the API."""
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0, tls))
    thread = threading.Thread(target=server.run, name="floor", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the floor's uvicorn did not start")
        time.sleep(0.02)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def measure_floor(
    wrk: str, tls: SiteCertificate, path: str, script: Path, answer_bytes: int, s: Settings
) -> tuple[list[Row], float]:
    """The floor's rows, and the FastAPI floor's CPU-ms a request at 16 clients."""
    answer = b"\0" * answer_bytes
    rows: list[Row] = []
    fastapi_cpu_ms = float("nan")
    for label, app in (
        ("bare ASGI app", _bare(answer)),
        ("FastAPI, one route", _fastapi(path, answer)),
    ):
        progress(f"floor: uvicorn over TLS serving a {label} that does nothing")
        with _served(app, tls) as port:
            url = f"https://127.0.0.1:{port}{path}"
            seq = run_wrk(wrk, url, script, threads=1, connections=1,
                          seconds=max(2, s.wrk_seconds // 2))  # fmt: skip
            with cpu_by_role() as used:
                many = run_wrk(wrk, url, script, threads=2, connections=API_CLIENTS,
                               seconds=max(2, s.wrk_seconds // 2))  # fmt: skip
        cpu_ms = used["the floor's server"] * 1000 / os.sysconf("SC_CLK_TCK") / max(
            many.requests, 1)  # fmt: skip
        if app.__class__ is FastAPI:
            fastapi_cpu_ms = cpu_ms
        rows += [
            Row(f"floor, {label}: wrk -t1 -c1", seq.p50_ms, seq.p99_ms, seq.requests_per_s,
                note=_note(seq, answer_bytes)),
            Row(f"floor, {label}: wrk -t2 -c{API_CLIENTS}", many.p50_ms, many.p99_ms,
                many.requests_per_s, note=f"{_note(many, answer_bytes)}; {cpu_ms:.2f} CPU-ms a "
                "request"),
        ]  # fmt: skip
    return rows, fastapi_cpu_ms


def _note(run: WrkResult, answer_bytes: int) -> str:
    failed = f", {run.failures} failed" if run.failures else ""
    return f"same body, {answer_bytes} B answers{failed}"
