"""The API half of bench/inference.py: the box served as in production, measured end to end.

One run serves the model twice from the same box: the API as it is now (group commit, ADR 0009)
and the per-request durable path it replaced (every request appends and fsyncs its own audit
record and commits its own result row), so the before and after rows share the machine's load
of the moment. The durable write is also measured alone, per record and group-committed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import resource
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openvino as ov
from _inference_common import API_CLIENTS, NOT_BEFORE, BenchSetupError, Row, Settings, progress
from _inference_floor import cpu_by_role, measure_floor, role_rows
from _inference_peers import (
    WRK_MISSING,
    Array,
    Call,
    WrkResult,
    fsync_floor,
    latencies_ms,
    paced_latencies_ms,
    pct,
    rate,
    run_wrk,
    threaded_rate,
    wrk_path,
    wrk_script,
)
from prometheus_client.parser import text_string_to_metric_families
from securesystemslib.signer import CryptoSigner

from appliance.api.results import ResultStore
from appliance.api.server import ApiServer, serve
from appliance.audit.group import GroupAuditor
from appliance.audit.records import AuditEvent, Outcome
from appliance.config import Config
from appliance.identity.roles import Role
from appliance.identity.service import IdentityService
from appliance.inference import engine
from appliance.inference.registry import ServedModel
from appliance.runtime import Runtime, open_runtime
from appliance.trust import core
from appliance.trust.swtpm import Swtpm
from appliance.trust.tpm import open_tpm
from appliance.updates.agent import Phase, import_vendor_root
from appliance.updates.wiring import make_agent
from provisioning.vendor import RoleSigners, build_bundle, init_repo, root_chain


@dataclass(frozen=True)
class ApiFigures:
    model: str
    rows: list[Row]
    overhead_ms: float
    ratio: float


@dataclass(frozen=True)
class V2Request:
    """One KServe v2 infer request as a stock client sends it: body bytes and headers."""

    body: bytes
    headers: dict[str, str]


def binary_request(name: str, x: Array) -> V2Request:
    """``x`` as tritonclient sends it by default: binary tensor data in, binary outputs out."""
    dtype = {"float32": "FP32", "int64": "INT64", "uint8": "UINT8"}[x.dtype.name]
    head = json.dumps({
        "inputs": [{"name": name, "shape": list(x.shape), "datatype": dtype,
                    "parameters": {"binary_data_size": x.nbytes}}],
        "parameters": {"binary_data_output": True},
    }).encode()  # fmt: skip
    return V2Request(head + np.ascontiguousarray(x).tobytes(),
                     {"Content-Type": "application/octet-stream",
                      "Inference-Header-Content-Length": str(len(head))})  # fmt: skip


def sign_bundle(folder: Path, top: Path) -> tuple[Path, bytes]:
    """A bundle of ``folder`` signed by a fresh one-key vendor repository, and its first root."""
    root, targets, snapshot, timestamp = (CryptoSigner.generate_ed25519() for _ in range(4))
    init_repo(
        top / "repo", [root], 1,
        {"targets": [targets.public_key], "snapshot": [snapshot.public_key],
         "timestamp": [timestamp.public_key]},
        1, NOT_BEFORE + timedelta(days=3650),
    )  # fmt: skip
    built = build_bundle(folder, top / "repo", RoleSigners([targets], [snapshot], [timestamp]),
                         top / "out.aplbundle", not_before=NOT_BEFORE)  # fmt: skip
    return built.path, root_chain(top / "repo")[0]


def service_token(identity: IdentityService) -> str:
    """A service account's bearer token (a PACS or EHR integration), made by a fresh admin."""
    password = secrets.token_urlsafe(24)
    identity.bootstrap_admin("bench-admin", password)
    admin, _ = identity.login("bench-admin", password)
    identity.add_account(admin, "bench-client", Role.SERVICE, None)
    return identity.issue_service_token(admin, "bench-client").token


@contextlib.contextmanager
def served_box(folder: Path, top: Path) -> Iterator[tuple[ApiServer, Runtime, str]]:
    """The box as the API tests build it: enrolled swtpm, the model installed, API over TLS."""
    progress("signing a bundle, enrolling a swtpm, installing it through the update agent")
    bundle, root = sign_bundle(folder, top / "vendor")
    with Swtpm(top / "tpm", sock=top / "s") as swtpm:
        config = Config(state_dir=top / "state", tcti=swtpm.tcti)
        with open_tpm(swtpm.tcti) as tpm:
            core.enroll(tpm, config)
        with open_runtime(config) as rt:
            token = service_token(rt.identity)
            agent = make_agent(rt, "bench")
            import_vendor_root(agent.paths, root)
            state = agent.install(bundle)
            if state.phase is not Phase.DONE:
                raise BenchSetupError(f"the update agent refused the bundle: {state.reason}")
            api = serve(rt, ov.Core(), port=0)
            try:
                yield api, rt, token
            finally:
                api.stop()


def handler_seconds(api: ApiServer) -> tuple[float, float]:
    """(sum, count) of the API's own inference-latency histogram (decode .. durable write)."""
    total = count = 0.0
    for family in text_string_to_metric_families(api.services.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "appliance_inference_seconds_sum":
                total += sample.value
            elif sample.name == "appliance_inference_seconds_count":
                count += sample.value
    return total, count


def http_latencies(
    api: ApiServer, token: str, path: str, request: V2Request, s: Settings
) -> tuple[Array, float]:
    """Sequential KServe v2 calls on one keep-alive HTTPS connection: the ms of each call in the
    round (of ``s.repeats``) with the lowest median, and the handler's mean ms over all rounds."""
    with api_client(api, token, request) as http:

        def call(_: Array) -> object:
            return answered(http, path, request)

        none = np.empty(0)
        latencies_ms(call, none, 50, 0)  # warm-up: connection, TLS handshake, first requests
        sum0, count0 = handler_seconds(api)
        rounds = [latencies_ms(call, none, s.api_calls, 0) for _ in range(s.repeats)]
        sum1, count1 = handler_seconds(api)
    best = min(rounds, key=lambda r: pct(r, 50))
    return best, (sum1 - sum0) / max(count1 - count0, 1) * 1000


@dataclass(frozen=True)
class DurableWrite:
    """The two durable steps of a request, as ``record`` in appliance.api.deps does them:
    per record (``grouped=False``: AuditLog.append, ResultStore.put) or group-committed."""

    api: ApiServer
    rt: Runtime
    model: str
    grouped: bool = False

    def audit(self, request_id: str) -> None:
        served = self.api.services.registry.get(self.model)
        log = self.api.services.audit if self.grouped else self.rt.audit
        log.append(
            AuditEvent.INFERENCE, actor="bench-client", role=Role.SERVICE.value,
            outcome=Outcome.SUCCESS, model=f"{served.manifest.name} {served.manifest.version}",
            detail={"request_id": request_id, "route": "bench"},
        )  # fmt: skip

    def store(self, request_id: str) -> None:
        served = self.api.services.registry.get(self.model)
        outputs = [{"name": "risk", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}]
        results = self.api.services.results
        put = results.put_grouped if self.grouped else results.put
        put(request_id, actor="bench-client", route="bench",
            provenance=served.provenance.as_dict(), inputs_sha256="0" * 64,
            outputs=outputs)  # fmt: skip

    def both(self, _: object = None) -> None:
        request_id = uuid.uuid4().hex
        self.audit(request_id)
        self.store(request_id)

    def timed(self, n: int) -> tuple[Array, Array]:
        """ms of the audit append and of the result commit, ``n`` times one after the other."""
        audit, store = np.empty(n), np.empty(n)
        for i in range(n):
            request_id = uuid.uuid4().hex
            t0 = time.perf_counter_ns()
            self.audit(request_id)
            t1 = time.perf_counter_ns()
            self.store(request_id)
            audit[i], store[i] = t1 - t0, time.perf_counter_ns() - t1
        return audit / 1e6, store / 1e6


@contextlib.contextmanager
def per_request_server(api: ApiServer, rt: Runtime) -> Iterator[ApiServer]:
    """A second server on the same box and models with the durable path as it was before
    group commit: the plain AuditLog (one append, fsyncs and head per request) and one SQLite
    commit per result."""
    services = dataclasses.replace(
        api.services, audit=rt.audit,
        results=ResultStore(api.services.results.path, group_commit=False,
                            clock=api.services.results.clock),
    )  # fmt: skip
    before = ApiServer(services, "127.0.0.1", 0, api.tls)
    before.start()
    try:
        yield before
    finally:
        before.stop()


def measure_api(m: Any, folder: Path, s: Settings, top: Path, *, durable: bool) -> ApiFigures:
    """The API rows for bundled model ``m`` (see inference.BundledModel) and the two figures;
    with ``durable``, also the durable write alone and the per-request path of before."""
    with served_box(folder, top) as (api, rt, token):
        served = api.services.registry.get(m.name)
        x = m.example(1)

        def engine_call(a: Array) -> object:
            return served.infer({m.input: a})

        request = binary_request(m.input, x)
        path = f"/v2/models/{m.name}/infer"
        progress(f"{m.name}: engine batch-1 and API over HTTPS ({s.api_calls} sequential calls)")
        half = s.latency_calls // 2
        before = latencies_ms(engine_call, x, half, s.warmup)
        api_ms, handler_ms = http_latencies(api, token, path, request, s)
        eng = np.concatenate([before, latencies_ms(engine_call, x, half, 0)])
        eng_rate = rate(engine_call, x, s.rate_seconds, s.repeats)
        gap_ms = pct(api_ms, 50)
        paced = paced_latencies_ms(engine_call, x, s.api_calls // 2, gap_ms / 1000)
        httpx_overhead = pct(api_ms, 50) - pct(eng, 50)
        rows = [
            Row(f"API vs engine: {m.name}, batch 1, {served.provenance.device}, TLS, binary "
                "tensors, uvicorn in this process", section=True),
            Row("engine: ServedModel.infer (the API's compiled model), 1 thread", pct(eng, 50),
                pct(eng, 99), eng_rate, "b=1", note=f"{len(eng)} calls around the API run"),
            Row(f"engine, idle {gap_ms:.1f} ms between calls (as between requests)",
                pct(paced, 50), pct(paced, 99),
                note="cold threads and caches: what a request's inference really costs"),
            Row("API end to end: httpx, keep-alive HTTPS, sequential", pct(api_ms, 50),
                pct(api_ms, 99), 1000 / float(np.mean(api_ms)), "b=1",
                note=f"best of {s.repeats} x {s.api_calls} calls; {httpx_overhead:.2f} ms over the "
                "engine, the Python client's own time included"),
            Row("  of which in the handler (decode..infer..audit..commit)", handler_ms,
                note="mean, from the API's own latency histogram"),
        ]  # fmt: skip
        if durable:
            rows += measure_durable(api, rt, m.name, s)
        wrk_rows, ratio, c1_ms = measure_wrk(api, rt, path, request, token,
                                             ((raw_call(served), engine_call), x), s, top,
                                             before=durable)  # fmt: skip
    # The headline overhead is the C client's (wrk, one connection): httpx's own time is not
    # the API's. Without wrk, the httpx figure stands in (and says so in its row).
    overhead = httpx_overhead if math.isnan(c1_ms) else c1_ms - pct(eng, 50)
    return ApiFigures(m.name, rows + wrk_rows, overhead, ratio)


def raw_call(served: ServedModel) -> Call:
    """OpenVINO's own infer on the API's compiled model, an infer request per thread: the raw
    engine, without the box's request pool or dynamic batching."""
    local = threading.local()

    def call(a: Array) -> object:
        if not hasattr(local, "request"):
            local.request = served.compiled.create_infer_request()
        return engine.infer(served.compiled, {served.manifest.inputs[0].name: a}, local.request)

    return call


def _batches(api: ApiServer) -> tuple[int, int]:
    """(batches, items) the API's audit committer has written so far."""
    audit = api.services.audit
    if not isinstance(audit, GroupAuditor):
        return 0, 0
    return audit.committer.batches, audit.committer.items


def measure_durable(api: ApiServer, rt: Runtime, model: str, s: Settings) -> list[Row]:
    """The durable write alone: one after the other, then from 16 threads per record (before)
    and group-committed (now); and the disk's floor."""
    progress(f"durable writes alone: {s.durable_writes} in a row, then {API_CLIENTS} threads")
    per_record, grouped = DurableWrite(api, rt, model), DurableWrite(api, rt, model, grouped=True)
    audit, store = per_record.timed(s.durable_writes)
    seconds = min(s.wrk_seconds, 5)
    concurrent = max(threaded_rate(per_record.both, np.empty(0), API_CLIENTS, seconds)
                     for _ in range(s.wrk_repeats))  # fmt: skip
    b0, n0 = _batches(api)
    together = max(threaded_rate(grouped.both, np.empty(0), API_CLIENTS, seconds)
                   for _ in range(s.wrk_repeats))  # fmt: skip
    b1, n1 = _batches(api)
    floor = fsync_floor(rt.config.state_dir, s.durable_writes)
    both = audit + store
    return [
        Row("  durable write alone: audit append + result commit", pct(both, 50), pct(both, 99),
            1000 / pct(both, 50),
            note=f"audit {pct(audit, 50):.2f} + result {pct(store, 50):.2f} ms p50; "
            "req/s = serialised ceiling"),
        Row(f"  durable write alone, {API_CLIENTS} threads, per request (before)",
            rate=concurrent, note="audit flock + SQLite writer lock: the old ceiling under load"),
        Row(f"  durable write alone, {API_CLIENTS} threads, group commit (now)", rate=together,
            note=f"{(n1 - n0) / max(b1 - b0, 1):.1f} audit records per fsync on average; "
            f"{together / max(concurrent, 1e-9):.1f}x before"),
        Row("  one 200-byte append + fsync on the state disk", pct(floor, 50), pct(floor, 99),
            note="the disk's floor for one durable step"),
    ]  # fmt: skip


def measure_wrk(
    api: ApiServer, rt: Runtime, path: str, request: V2Request, token: str,
    peers: tuple[tuple[Call, Call], Array], s: Settings, top: Path, *, before: bool,
) -> tuple[list[Row], float, float]:  # fmt: skip
    """API throughput at 16 clients (wrk), now (and per request, before, when ``before``),
    against 16 threads on the engine (raw OpenVINO, the ratio's peer, and ServedModel.infer,
    which batches); the ratio (now) and wrk's one-connection p50 ms (now)."""
    wrk = wrk_path()
    if wrk is None:
        missing = [Row(f"API at {API_CLIENTS} clients (wrk)", note=WRK_MISSING)]
        return missing, float("nan"), float("nan")
    script = wrk_script(top / "infer.lua", request.body, token, request.headers)
    calls, x = peers
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        servers = [("now, group commit", api)]
        if before:
            old_path = stack.enter_context(per_request_server(api, rt))
            servers.append(("before, per request", old_path))
        for label, server in servers:
            url = f"https://127.0.0.1:{server.port}{path}"
            progress(f"API ({label}) with wrk: 1 connection, then {API_CLIENTS}")
            seq = run_wrk(wrk, url, script, threads=1, connections=1,
                          seconds=max(2, s.wrk_seconds // 2))  # fmt: skip
            cpu0 = process_cpu_s()
            with cpu_by_role() as used:
                runs = [run_wrk(wrk, url, script, threads=2, connections=API_CLIENTS,
                                seconds=s.wrk_seconds) for _ in range(s.wrk_repeats)]  # fmt: skip
            served = sum(r.requests for r in runs)
            cpu_ms = (process_cpu_s() - cpu0) * 1000 / max(served, 1)
            best = max(runs, key=lambda r: r.requests_per_s)
            rows += [
                Row(f"API ({label}): wrk -t1 -c1 (C client, sequential)", seq.p50_ms, seq.p99_ms,
                    seq.requests_per_s, "b=1", note=_failures(seq)),
                Row(f"API ({label}): wrk -t2 -c{API_CLIENTS} -d{s.wrk_seconds}s", best.p50_ms,
                    best.p99_ms, best.requests_per_s, "b=1",
                    note=f"best of {len(runs)}; {_failures(best)}; the API process used "
                    f"{cpu_ms:.2f} CPU-ms a request"),
            ]  # fmt: skip
            if server is api:
                now, c1_ms = best.requests_per_s, seq.p50_ms
                rows += role_rows(used, served)
    progress(f"engine, {API_CLIENTS} Python threads on OpenVINO (raw), then on ServedModel.infer")
    raw_call, served_call = calls
    raw16, raw_cpu_ms = _engine_rate(raw_call, x, s)
    served16, served_cpu_ms = _engine_rate(served_call, x, s)
    ratio = now / raw16
    rows += [
        Row(f"engine (raw): {API_CLIENTS} Python threads x OpenVINO infer, a request each",
            rate=raw16, batch="b=1", note=f"the ratio's peer, best of {s.wrk_repeats} x "
            f"{s.wrk_seconds} s, {raw_cpu_ms:.2f} CPU-ms an inference; API now = {ratio:.3f}x "
            "(goal >= 0.9)"),
        Row(f"engine (the API's): {API_CLIENTS} Python threads x ServedModel.infer", rate=served16,
            batch="b=1", note=f"dynamic batching, {served_cpu_ms:.2f} CPU-ms a case; API now = "
            f"{now / served16:.3f}x of it"),
    ]  # fmt: skip
    assert api.tls is not None  # api_client has refused a server without TLS
    floor, floor_cpu_ms = measure_floor(wrk, api.tls, path, script,
                                        len(one_answer(api, token, path, request)), s)  # fmt: skip
    ceiling = raw_cpu_ms / (raw_cpu_ms + floor_cpu_ms)
    rows += [*floor, Row(
        "  ratio's ceiling on this stack: engine CPU / (engine CPU + FastAPI floor CPU)",
        note=f"{ceiling:.3f}: what an API doing nothing but TLS, HTTP and FastAPI could reach",
    )]  # fmt: skip
    return rows, ratio, c1_ms


def _engine_rate(call: Call, x: Array, s: Settings) -> tuple[float, float]:
    """(best calls/s of 16 threads calling ``call(x)``, CPU-ms a call over all the runs)."""
    cpu0 = process_cpu_s()
    rates = [threaded_rate(call, x, API_CLIENTS, s.wrk_seconds) for _ in range(s.wrk_repeats)]
    return max(rates), (process_cpu_s() - cpu0) * 1000 / (sum(rates) * s.wrk_seconds)


@contextlib.contextmanager
def api_client(api: ApiServer, token: str, request: V2Request) -> Iterator[httpx.Client]:
    """A keep-alive HTTPS client of ``api`` that sends ``request``'s headers with the token."""
    if api.tls is None:
        raise BenchSetupError("the API serves without TLS; the benchmark measures it with TLS.")
    ctx = ssl.create_default_context(cafile=str(api.tls.cert))
    headers = {"Authorization": f"Bearer {token}", **request.headers}
    with httpx.Client(base_url=f"https://127.0.0.1:{api.port}", headers=headers, verify=ctx,
                      timeout=30) as http:  # fmt: skip
        yield http


def answered(http: httpx.Client, path: str, request: V2Request) -> httpx.Response:
    """The API's answer to ``request`` on ``path``; BenchSetupError unless it is a 200."""
    answer = http.post(path, content=request.body)
    if answer.status_code != 200:
        raise BenchSetupError(f"the API answered {answer.status_code}: {answer.text}")
    return answer


def one_answer(api: ApiServer, token: str, path: str, request: V2Request) -> bytes:
    """The body of one answer of the API to ``request``."""
    with api_client(api, token, request) as http:
        return answered(http, path, request).content


def process_cpu_s() -> float:
    """CPU seconds this process (uvicorn's threads, the engine's) has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _failures(run: WrkResult) -> str:
    return f"{run.requests} requests, {run.failures} failed" if run.failures else (
        f"{run.requests} requests, all 200")  # fmt: skip
