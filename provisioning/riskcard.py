"""The model card of breast-cancer-risk, written by its recipe from the figures it measured.

The card is generated, not hand-edited, so its numbers are the recipe's and a test that rebuilds
the model folder compares them byte for byte; :func:`metric_lines` is also what the test
re-measures with OpenVINO on the committed files.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from appliance.inference.engine import openvino_version

if TYPE_CHECKING:
    from provisioning.riskmodel import Built, Metrics


def metric_lines(m: Metrics) -> list[str]:
    """The held-out metric table and the reliability table as Markdown lines."""
    lines = [
        "| held-out cases | malignant | AUC | Brier score |",
        "|---:|---:|---:|---:|",
        f"| {m.cases} | {m.malignant} | {m.auc:.4f} | {m.brier:.4f} |",
        "",
        "| predicted risk | cases | mean predicted | observed malignant |",
        "|---|---:|---:|---:|",
    ]
    for b in m.reliability:
        close = "]" if b.high == 1.0 else ")"
        mean = "-" if math.isnan(b.mean_predicted) else f"{b.mean_predicted:.3f}"
        seen = "-" if math.isnan(b.observed) else f"{b.observed:.3f}"
        lines.append(f"| [{b.low:.1f}, {b.high:.1f}{close} | {b.cases} | {mean} | {seen} |")
    return lines


def parity_line(runtime: str, m: Metrics) -> str:
    return f"| {runtime} | f32 | {m.parity:.1e} | {m.auc:.4f} | {m.brier:.4f} |"


def card_text(built: Built) -> str:
    """The whole CARD.md."""
    import sklearn  # type: ignore[import-untyped]

    from provisioning import riskmodel as rm

    ov_m, split = built.openvino, built.split
    names = ", ".join(split.feature_names)
    expected = math.floor(ov_m.auc * 1000) / 1000
    train_pos = int(split.y_train.sum())
    return "\n".join(
        [
            f"# {rm.NAME} {rm.VERSION}: malignancy risk from fine-needle aspirate features",
            "",
            "## Task",
            "",
            "The probability that a breast mass is malignant, from 30 features of the cell nuclei "
            "measured on a digitised image of a fine-needle aspirate (FNA). Input `features` "
            f"[-1, {rm.FEATURES}] f32, in this order: {names}. Output `risk` [-1, 1]: the "
            "probability of malignancy.",
            "",
            "## Intended use and limits",
            "",
            "A reference model: it exercises the appliance's tabular risk path (signed bundle, "
            "validation gate, engine, API, results) on real data with honest held-out figures. It "
            "is **not a diagnostic device** and has no clinical validation.",
            "",
            "- One centre, one era: 569 aspirates from the University of Wisconsin Hospitals "
            "(1990s); no external validation.",
            "- The features are the outputs of one image-analysis program (Xcyt); values measured "
            "another way (other software, other magnification, other units) are out of "
            "distribution, and the model does not detect that: it scores whatever it is given.",
            f"- 37% of the data set is malignant ({train_pos + ov_m.malignant} of 569); the "
            "probabilities are calibrated to that case mix, not to a screening population, where "
            "they would overstate the risk.",
            "- Known failure modes: cases near the decision boundary (the 0.3-0.7 rows below hold "
            "few cases and the observed rates there rest on a handful of them); any feature column "
            "swapped or scaled.",
            "",
            "## Data and provenance",
            "",
            "The Wisconsin Diagnostic Breast Cancer data set (Street, Wolberg and Mangasarian, "
            "1993; UCI ML repository), as scikit-learn "
            f"{sklearn.__version__} ships it inside its wheel (`sklearn.datasets."
            "load_breast_cancer`): nothing is downloaded. Label 1 = malignant (scikit-learn's "
            f"target 0). Split: stratified, {rm.HELD_OUT:.0%} held out, seed {rm.SEED}: "
            f"{len(split.y_train)} training cases ({train_pos} malignant), {ov_m.cases} held out "
            f"({ov_m.malignant} malignant). The held-out cases are `reference/cases.npz`.",
            "",
            "## Model",
            "",
            "Standardisation, then L2-regularised logistic regression; its inverse strength C "
            f"chosen among {len(rm.STRENGTHS)} values from 0.001 to 100 by {rm.FOLDS}-fold "
            "stratified cross-validation on the training part, scored by log loss: "
            f"C = {built.fitted.strength:.4g}. The graph is "
            "`(x - mean) / scale -> MatMul -> Add -> Sigmoid` in standard ops, the same "
            "in `model.xml`/`model.bin` (OpenVINO IR) and `model.onnx` (ONNX opset "
            f"{rm.ONNX_OPSET}, built with the onnx helper API).",
            "",
            "## Held-out metrics (OpenVINO, CPU, f32)",
            "",
            *metric_lines(ov_m),
            "",
            "Calibration: the Brier score above and the reliability table (held-out cases by "
            "predicted risk; the last row includes 1.0).",
            "",
            "## Precision and parity",
            "",
            "Weights are stored in f32 (`compress_to_fp16=False`; OpenVINO's `save_model` would "
            "otherwise compress them to f16). Inference runs with the f32 precision hint: on CPUs "
            "with AMX or AVX-512 BF16 OpenVINO's default is bf16, which keeps about three "
            "significant digits. Measured on the development machine (AMD EPYC, bf16 default): "
            "without the hint, held-out probabilities moved by up to 0.57 and 17 of 171 "
            "decisions at 0.5 flipped (Brier 0.067 instead of 0.012); "
            "`tests/models/test_breast_cancer_risk.py` repeats that measurement wherever the "
            "CPU has bf16. The fitted parameters are rounded to f32 and put back into the "
            "scikit-learn pipeline, so every runtime holds identical weights; that rounding "
            f"moved a held-out probability by at most {built.rounding:.1e}. Largest difference "
            f"from scikit-learn's `predict_proba` over the {ov_m.cases} held-out cases "
            f"(limit {rm.PARITY_LIMIT:.0e}):",
            "",
            "| runtime | precision | max abs difference | AUC | Brier |",
            "|---|---|---:|---:|---:|",
            parity_line(f"OpenVINO {openvino_version().split('-')[0]} CPU", ov_m),
            parity_line("onnxruntime CPU", built.onnxruntime),
            "",
            "## Reference set and validation gate",
            "",
            f"`reference/cases.npz` holds the {ov_m.cases} held-out cases (`features`, `labels`). "
            f"The manifest claims AUC {expected:.3f} with a tolerance of {rm.TOLERANCE}: the box "
            "re-measures it on its own device before the model goes live.",
            "",
            "## Rebuild",
            "",
            f"`python models/{rm.NAME}/build.py` rebuilds every file byte for byte (seed "
            f"{rm.SEED}, one BLAS thread); `sha256sum -c SHA256SUMS` checks them.",
            "",
        ]
    )
