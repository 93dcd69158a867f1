#!/usr/bin/env bash
# Accuracy acceptance run on MVTec bottle: train (timed) → export → evaluate the ONNX with sdk.Detector → bench.
# Writes benchmarks/results/bottle.md. Usage: bash benchmarks/bottle.sh [RUN_DIR]   (run inside the project venv)
set -euo pipefail
MVTEC="${RDEDGE_MVTEC_ROOT:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data/mvtec}"
RUN="${1:-runs/bottle}"
EPOCHS="${EPOCHS:-30}"
start=$(date +%s)
rdedge train --data "$MVTEC" --category bottle --backbone efficientnet_lite0 --epochs "$EPOCHS" \
    --image-size 256 --batch-size 16 --seed 0 --out "$RUN" --quiet
train_s=$(( $(date +%s) - start ))
rdedge export "$RUN" --quiet | tee "$RUN/export.txt"
rdedge evaluate "$RUN/model.onnx" --json --quiet > "$RUN/evaluate.json"
rdedge bench "$RUN" --json --quiet > "$RUN/bench.json"
python - "$RUN" "$train_s" "$EPOCHS" <<'PY'
import json, pathlib, sys

from benchmarks.latency import markdown_table
from sdk import Detector

run, train_s, epochs = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ev = json.loads((run / "evaluate.json").read_text())
bench = json.loads((run / "bench.json").read_text())
meta = Detector(run / "model.onnx").metadata
lines = [
    "# MVTec bottle: RD4AD / EfficientNet-Lite0 / 256 px, trained on the CPU",
    "",
    f"Command: `bash benchmarks/bottle.sh` ({epochs} epochs, batch 16, seed 0; {meta.training['n_train']} training "
    f"+ {meta.training['n_validation']} validation good images). Metrics from `rdedge evaluate` on the exported "
    "ONNX (ONNX Runtime through sdk.Detector).",
    "",
    "| metric | value | target |",
    "|---|---:|---:|",
    f"| image AUROC | {ev['image_auroc']:.4f} | >= 0.99 |",
    f"| pixel AUROC | {ev['pixel_auroc']:.4f} | >= 0.98 |",
    f"| AUPRO (pooled, FPR <= 0.3) | {ev['aupro']:.4f} | >= 0.90 |",
    f"| F1 at the calibrated threshold | {ev['f1']:.4f} | |",
    f"| test images (anomalous) | {ev['n_images']} ({ev['n_anomalous']}) | |",
    f"| `rdedge train` wall time (data loading, training, calibration) | {train_s} s | <= 600 s |",
    f"| ONNX Runtime vs PyTorch, max relative error (map / score) | {meta.checks['onnxruntime_vs_torch_map']:.1e} / "
    f"{meta.checks['onnxruntime_vs_torch_score']:.1e} | <= 1e-4 |",
    "",
    markdown_table(bench).replace("# Latency", "## Latency"),
]
out = pathlib.Path("benchmarks/results/bottle.md")
out.write_text("\n".join(lines))
print("\n".join(lines))
PY
