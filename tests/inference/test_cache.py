"""The compile cache: encrypted blobs, reused when intact, refused and rebuilt when tampered."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from appliance.inference import engine
from appliance.inference.cache import CompileCache
from provisioning.testmodel import WEIGHTS, build_model_dir

KEY = os.urandom(32)


@pytest.fixture
def compiled(tmp_path: Path) -> tuple[ov.Core, object]:
    folder = build_model_dir(tmp_path / "m")
    core = ov.Core()
    weights = bytearray((folder / "model.bin").read_bytes())
    model = engine.load_model((folder / "model.xml").read_bytes(), weights, core=core)
    return core, engine.compile(model, "CPU", core=core)


def test_a_cached_blob_is_encrypted_and_reused(
    tmp_path: Path, compiled: tuple[ov.Core, object]
) -> None:
    core, model = compiled
    cache = CompileCache(tmp_path / "cache", KEY)
    entry = CompileCache.entry("ab" * 32, "risk-demo", "CPU", "f32-latency")
    assert cache.load(entry, "CPU", core=core) is None
    cache.store(entry, model)
    blob = (tmp_path / "cache" / f"{entry}.blob").read_bytes()
    assert WEIGHTS.tobytes() not in blob, "the exported weights are on disk in the clear"
    again = cache.load(entry, "CPU", core=core)
    assert again is not None
    x = np.ones((2, 8), dtype=np.float32)
    np.testing.assert_allclose(engine.infer(again, {"features": x})["risk"],
                               engine.infer(model, {"features": x})["risk"])  # fmt: skip


def test_a_tampered_blob_is_refused_deleted_and_rebuilt(
    tmp_path: Path, compiled: tuple[ov.Core, object]
) -> None:
    core, model = compiled
    cache = CompileCache(tmp_path / "cache", KEY)
    entry = CompileCache.entry("ab" * 32, "risk-demo", "CPU", "f32-latency")
    cache.store(entry, model)
    path = tmp_path / "cache" / f"{entry}.blob"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert cache.load(entry, "CPU", core=core) is None
    assert not path.exists()


def test_the_entry_changes_with_what_the_blob_depends_on() -> None:
    base = CompileCache.entry("ab" * 32, "m", "CPU", "f32-latency")
    assert base != CompileCache.entry("cd" * 32, "m", "CPU", "f32-latency")
    assert base != CompileCache.entry("ab" * 32, "m", "GPU.0", "f32-latency")
    assert base != CompileCache.entry("ab" * 32, "m", "CPU", "int8-throughput")
