"""What the parts of bench/inference.py share: settings, the table's rows, progress lines."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

BATCHES = (1, 64, 1024)
# A conv net on images: 1024 cases hold tens of GB of activations in torch eager (the imaging
# model at 48/96 channels ran this 24 GiB machine out of memory); 64 already fills the cores.
HEAVY_BATCHES = (1, 8, 64)
API_CLIENTS = 16
NOT_BEFORE = datetime(2026, 12, 1, tzinfo=UTC)


class BenchSetupError(RuntimeError):
    """The served box could not be set up; the message says which step failed."""


@dataclass(frozen=True)
class Settings:
    """How long to measure: the full run, or ``--quick`` for a look in a few seconds."""

    latency_calls: int = 2000
    warmup: int = 200
    rate_seconds: float = 1.0
    repeats: int = 3
    async_cases: int = 65536
    api_calls: int = 600
    durable_writes: int = 300
    wrk_seconds: int = 10
    wrk_repeats: int = 2
    threads: int = 2
    batches: tuple[int, ...] = BATCHES  # the batch sizes tried for the best throughput

    @classmethod
    def quick(cls, threads: int) -> Settings:
        return cls(latency_calls=300, warmup=50, rate_seconds=0.3, repeats=1, async_cases=8192,
                   api_calls=150, durable_writes=60, wrk_seconds=3, wrk_repeats=1,
                   threads=threads)  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One line of the table; ``section`` rows are headings."""

    label: str
    p50: float | None = None
    p99: float | None = None
    rate: float | None = None
    batch: str = ""
    peak: float | None = None
    note: str = ""
    section: bool = False


def progress(text: str) -> None:
    print(f"  .. {text}", flush=True)


def model_irs(folder: Path) -> tuple[Path, Path | None]:
    """A model folder's f32 IR and its int8 IR, if it has one (models/README.md).

    A folder whose box-served ``model.xml`` is int8 keeps its f32 IR in ``f32/``
    (models/imaging-anomaly); a folder that serves f32 may keep an int8 build in ``int8/``.
    """
    if (folder / "f32" / "model.xml").is_file():
        return folder / "f32" / "model.xml", folder / "model.xml"
    int8 = folder / "int8" / "model.xml"
    return folder / "model.xml", int8 if int8.is_file() else None
