"""Recipe: the breast-cancer malignancy risk model (scikit-learn's WDBC data, no downloads).

``python models/breast-cancer-risk/build.py [--out DIR]`` trains on the fixed seed, exports the
OpenVINO IR (f32) and the ONNX file, checks both against scikit-learn (1e-6), and writes the
manifest, the reference set, the card and SHA256SUMS into this folder (or DIR). The work is in
provisioning/riskmodel.py; running it twice gives the same bytes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")  # a shared 2-core machine; the fit uses one

from provisioning.riskmodel import NAME, VERSION, build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("--out", type=Path, default=here, help=f"output folder (default {here})")
    out = parser.parse_args().out
    built = build(out)
    m = built.openvino
    print(f"{NAME} {VERSION} -> {out}")
    print(f"  held-out AUC {m.auc:.4f}, Brier {m.brier:.4f} on {m.cases} cases (OpenVINO CPU f32)")
    print(f"  parity vs scikit-learn: OpenVINO {m.parity:.1e}, onnxruntime "
          f"{built.onnxruntime.parity:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
