"""Rich text for each dashboard panel, from one HealthReport; problems in red with the action."""

from __future__ import annotations

import time
from collections.abc import Iterable

from rich.text import Text

from appliance.console.health import HealthReport, Level, Problem

RED, YELLOW, GREEN, DIM = "bold red", "yellow", "green", "dim"


def _problems(text: Text, problems: Iterable[Problem]) -> Text:
    for p in problems:
        style = RED if p.level is Level.ERROR else YELLOW
        text.append(f"\n✖ {p.message}" if p.level is Level.ERROR else f"\n! {p.message}", style)
        text.append(f"\n  → {p.action}", style)
    return text


def _yes(flag: bool, yes: str, no: str) -> tuple[str, str]:
    return (yes, GREEN) if flag else (no, RED)


def trust(report: HealthReport) -> Text:
    t = report.trust
    out = Text()
    if t is not None:
        out.append(f"TPM: {t.tpm}\n")
        out.append("enrolled: ").append(*_yes(t.enrolled, "yes", "NO"))
        out.append("\nlockout: ").append(
            *_yes(not t.in_lockout, f"no ({t.failed_tries}/{t.max_tries} failures)", "LOCKED OUT")
        )
        out.append(f"\nPCR policy: PCR {','.join(map(str, t.pcrs))}")
        for key in t.keys:
            out.append(f"\n  {key.name}: ").append(
                *_yes(key.unsealable, "unseals", f"WILL NOT UNSEAL (PCR {key.differing})")
            )
        out.append(f"\nanti-rollback floor: {t.floor if t.floor is not None else 'none'}")
    return _problems(out, report.problems_for("TPM"))


def hardware(report: HealthReport) -> Text:
    hw = report.hardware
    out = Text()
    if hw is not None:
        out.append(f"profile: {hw.profile}\nCPU: {hw.cpu_model}\n")
        out.append(f"OpenVINO devices: {', '.join(hw.devices) or 'none'}\n")
        out.append(f"interactive models run on: {hw.interactive_device or 'none'}\n")
        out.append(f"batch models run on: {hw.batch_device or 'none'}")
    out.append(f"\ndisk: {report.encryption}")
    for s in report.services:
        out.append(f"\nservice {s.unit}: ").append(s.state, GREEN if s.state == "active" else DIM)
    subjects = ("hardware", "NPU", "GPU", "CPU", "openvino", "encryption")
    return _problems(out, (*report.problems_for(*subjects), *report.problems_for("services")))


def models(report: HealthReport) -> Text:
    out = Text()
    for m in report.models or ():
        out.append(f"{m.name}\n", "bold")
        for s in m.slots:
            mark = "active  " if s.active else "inactive"
            out.append(f"  slot {s.slot} {mark} {s.version or 'empty'}\n", "" if s.active else DIM)
    out.rstrip()
    return _problems(out, report.problems_for("models"))


def update(report: HealthReport) -> Text:
    u = report.update
    out = Text()
    if u is not None:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(u.updated)) if u.updated else ""
        out.append(f"last update: {u.phase} {u.model or ''} {u.version or ''}".rstrip())
        if when:
            out.append(f"\nat {when}")
        if u.reason:
            out.append(f"\n{u.reason}", DIM)
    return _problems(out, report.problems_for("update"))


def audit(report: HealthReport) -> Text:
    out = Text()
    for line in report.audit or ():
        style = RED if line.flagged else ("" if line.outcome == "success" else YELLOW)
        out.append(f"{line.time[11:19]} {line.event:<16} {line.actor:<12} {line.outcome}\n", style)
    if report.audit == ():
        out.append("no audit events in the last 24 h", DIM)
    out.rstrip()
    return _problems(out, report.problems_for("audit", "break-glass"))


def system(report: HealthReport) -> Text:
    out = Text()
    if report.system:
        s = report.system[-1]
        out.append(f"CPU {s.cpu_percent:5.1f}%   memory {s.memory_percent:5.1f}% of ")
        out.append(f"{s.memory_total_gib:.1f} GiB   disk {s.disk_percent:5.1f}% ")
        out.append(f"({s.disk_free_gib:.1f} GiB free)")
        temps = "  ".join(f"{t.sensor} {t.celsius:.0f}°C" for t in s.temperatures)
        out.append(f"\ntemperatures: {temps or 'no sensors'}")
    return _problems(out, report.problems_for("disk", "memory", "temperature"))


def summary(report: HealthReport) -> Text:
    errors = [p for p in report.problems if p.level is Level.ERROR]
    if errors:
        subjects = ", ".join(dict.fromkeys(p.subject for p in errors))
        return Text(f"{len(errors)} problem(s) need action, in red below ({subjects}); "
                    "arrow and page keys scroll.", RED)  # fmt: skip
    return Text("No errors.", GREEN)
