"""The notes PHI tagger (vendor side): data, training in numpy, and the OpenVINO and ONNX graphs.

The tagger reads a token's hashed feature ids (``appliance/notes/tokens.py``) and answers the
probability of each class of ``appliance.notes.types.CLASSES``::

    features [-1, F] i64 -> embedding bag (sum of F rows of [B, D]) -> + b1 -> ReLU
      -> MatMul [D, H] + b2 -> ReLU -> MatMul [H, C] + b3 -> Softmax -> tags [-1, C]

The OpenVINO graph does the bag with EmbeddingBagPackedSum (one kernel, about twice as fast as
Gather + ReduceSum on this CPU); ONNX has no such op, so model.onnx spells it Gather + ReduceSum.

It is trained here with plain numpy (hand-written gradients, Adam, a fixed seed, one BLAS thread)
rather than torch: the model is small, the build stays a few minutes on 2 cores without a 700 MB
dependency, and every step is reproducible byte for byte. Both graphs are written from the same
f32 arrays, every node named, so the IR and the ONNX file are deterministic too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import openvino as ov  # type: ignore[import-untyped,unused-ignore]
import openvino.opset3 as ops3  # type: ignore[import-untyped,unused-ignore]
import openvino.opset13 as ops  # type: ignore[import-untyped,unused-ignore]

from appliance.notes.pipeline import phi_token_mask
from appliance.notes.tokens import BUCKETS, FEATURES, Token, features, tokenize
from appliance.notes.types import CLASSES
from provisioning.notesdata import SynthNote

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
EMBED, HIDDEN = 16, 64
INPUT, OUTPUT = "features", "tags"
PHI_WEIGHT = 3.0  # a missed PHI token costs three false alarms in the loss: recall first


@dataclass(frozen=True)
class Weights:
    embedding: F32  # (BUCKETS, EMBED)
    b1: F32
    w2: F32  # (EMBED, HIDDEN)
    b2: F32
    w3: F32  # (HIDDEN, classes)
    b3: F32

    def arrays(self) -> dict[str, F32]:
        return {"embedding": self.embedding, "b1": self.b1, "w2": self.w2, "b2": self.b2,
                "w3": self.w3, "b3": self.b3}  # fmt: skip


def token_labels(tokens: Sequence[Token], note: SynthNote) -> I64:
    """The class index of each token: the type of the true PHI span over it, else 0."""
    out = np.zeros(len(tokens), dtype=np.int64)
    for span in note.phi:
        covered = phi_token_mask(tokens, [span])
        out[covered] = CLASSES.index(span.type)
    return out


def dataset(notes: Iterable[SynthNote]) -> tuple[I64, I64]:
    """Feature ids and labels of every token of ``notes``, stacked."""
    ids, labels = [], []
    for note in notes:
        tokens = tokenize(note.text)
        ids.append(features(tokens))
        labels.append(token_labels(tokens, note))
    return np.concatenate(ids), np.concatenate(labels)


def forward(w: Weights, ids: I64) -> F32:
    """The class probabilities in numpy: the reference the two graphs are compared with."""
    h1 = np.maximum(w.embedding[ids].sum(axis=1) + w.b1, 0)
    h2 = np.maximum(h1 @ w.w2 + w.b2, 0)
    return _softmax(h2 @ w.w3 + w.b3)


def _softmax(z: F32) -> F32:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: F32 = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


def train(ids: I64, labels: I64, *, seed: int, epochs: int = 4, batch: int = 256) -> Weights:
    """Adam on class-weighted cross-entropy; same data and seed, same weights (one BLAS thread)."""
    rng = np.random.default_rng(seed)
    classes = len(CLASSES)
    params = [
        # Small rows: a bucket no training feature reaches adds little for an unseen word
        # (a positive b1 keeps the first ReLU open while the rows are still small).
        (rng.standard_normal((BUCKETS, EMBED)) * 0.02).astype(np.float32),
        np.full(EMBED, 0.1, np.float32),
        (rng.standard_normal((EMBED, HIDDEN)) * math.sqrt(2 / EMBED)).astype(np.float32),
        np.zeros(HIDDEN, np.float32),
        (rng.standard_normal((HIDDEN, classes)) * math.sqrt(1 / HIDDEN)).astype(np.float32),
        np.zeros(classes, np.float32),
    ]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    class_weight = np.where(np.arange(classes) == 0, 1.0, PHI_WEIGHT).astype(np.float32)
    step = 0
    for epoch in range(epochs):
        lr = 3e-3 * (0.5**epoch)
        order = rng.permutation(len(labels))
        for at in range(0, len(order), batch):
            rows = order[at : at + batch]
            grads = _gradients(params, ids[rows], labels[rows], class_weight)
            step += 1
            _adam(params, grads, moments, lr, step)
    return Weights(*params)


def _gradients(params: list[F32], ids: I64, labels: I64, class_weight: F32) -> list[F32]:
    emb, b1, w2, b2, w3, b3 = params
    z1 = emb[ids].sum(axis=1) + b1
    h1 = np.maximum(z1, 0)
    z2 = h1 @ w2 + b2
    h2 = np.maximum(z2, 0)
    p = _softmax(h2 @ w3 + b3)
    weight = class_weight[labels]
    d3 = p.copy()
    d3[np.arange(len(labels)), labels] -= 1.0
    d3 *= (weight / weight.sum())[:, None]
    d2 = (d3 @ w3.T) * (z2 > 0)
    d1 = (d2 @ w2.T) * (z1 > 0)
    g_emb = np.zeros_like(emb)
    np.add.at(g_emb, ids.ravel(), np.repeat(d1, ids.shape[1], axis=0))
    return [g_emb, d1.sum(0), h1.T @ d2, d2.sum(0), h2.T @ d3, d3.sum(0)]


def _adam(
    params: list[F32], grads: list[F32], moments: list[tuple[F32, F32]], lr: float, step: int
) -> None:
    b1, b2, eps = 0.9, 0.999, 1e-8
    scale = lr * math.sqrt(1 - b2**step) / (1 - b1**step)
    for param, grad, (mean, var) in zip(params, grads, moments, strict=True):
        np.multiply(mean, b1, out=mean)
        np.add(mean, (1 - b1) * grad, out=mean)
        np.multiply(var, b2, out=var)
        np.add(var, (1 - b2) * grad * grad, out=var)
        np.subtract(param, (scale * mean / (np.sqrt(var) + eps)).astype(np.float32), out=param)


def openvino_model(w: Weights, name: str) -> ov.Model:
    """The tagger as an OpenVINO graph, every node named (no process counters in the IR)."""
    x = ops.parameter([-1, FEATURES], ov.Type.i64, name=INPUT)
    table = ops.constant(w.embedding, name="embedding")
    summed = ops3.embedding_bag_packed_sum(table, x, name="bag")
    h1 = ops.relu(ops.add(summed, ops.constant(w.b1, name="b1"), name="z1"), name="h1")
    z2 = ops.matmul(h1, ops.constant(w.w2, name="w2"), False, False, name="m2")
    h2 = ops.relu(ops.add(z2, ops.constant(w.b2, name="b2"), name="z2"), name="h2")
    z3 = ops.matmul(h2, ops.constant(w.w3, name="w3"), False, False, name="m3")
    logits = ops.add(z3, ops.constant(w.b3, name="b3"), name="logits")
    probs = ops.softmax(logits, 1, name=OUTPUT)
    probs.output(0).get_tensor().set_names({OUTPUT})
    return ov.Model([ops.result(probs, name="tags_result")], [x], name)


def onnx_bytes(w: Weights, name: str) -> bytes:
    """The same graph in ONNX (opset 17), for onnxruntime in bench/inference.py."""
    import onnx  # type: ignore[import-untyped,unused-ignore]  # vendor side only
    from onnx import TensorProto, helper, numpy_helper  # type: ignore[import-untyped,unused-ignore]

    inits = [numpy_helper.from_array(a, n) for n, a in w.arrays().items()]
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "sum_axis"))
    nodes = [
        helper.make_node("Gather", ["embedding", INPUT], ["rows"], name="rows", axis=0),
        helper.make_node("ReduceSum", ["rows", "sum_axis"], ["bag"], name="bag", keepdims=0),
        helper.make_node("Add", ["bag", "b1"], ["z1"], name="z1"),
        helper.make_node("Relu", ["z1"], ["h1"], name="h1"),
        helper.make_node("MatMul", ["h1", "w2"], ["m2"], name="m2"),
        helper.make_node("Add", ["m2", "b2"], ["z2"], name="z2"),
        helper.make_node("Relu", ["z2"], ["h2"], name="h2"),
        helper.make_node("MatMul", ["h2", "w3"], ["m3"], name="m3"),
        helper.make_node("Add", ["m3", "b3"], ["logits"], name="logits"),
        helper.make_node("Softmax", ["logits"], [OUTPUT], name=OUTPUT, axis=1),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(INPUT, TensorProto.INT64, ["tokens", FEATURES])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["tokens", len(CLASSES)])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="appliance notes-phi build.py")  # fmt: skip
    model.ir_version = 8
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString(deterministic=True)
    return data
