"""Image score functions on every set: which turns an anomaly map into the score that separates parts best.

The papers score an image by the maximum of its smoothed map. A map that localises well can still rank parts poorly
when one bright pixel on a good part outweighs a faint, long defect. Measured here, on the models that
``benchmarks.accuracy`` trained (``runs/accuracy/SET/METHOD``), from the exported graph's own maps:

* ``max``: the maximum (the papers'; the graph's default);
* ``top_mean:F``: the mean of the map's top F share of pixels (F = 0.1 %, 1 %, 5 %);
* ``refinement``: DRD's detection refinement (``(1 + v_k*) · max``) exported for the model (any method).

**Choosing without test images.** Each candidate is scored twice: on the test set (reported, never used to choose)
and on a *selection set* built from the run's held-out good training images only: those images against copies of
them with synthetic defects (DRD's self cut-paste and RD++'s simplex-noise box, from :mod:`train.methods`, one of
each per image). The candidate with the best mean selection AUROC over the sets is the one to keep.

Run: ``python -m benchmarks.scores`` after ``python -m benchmarks.accuracy`` (``--sets``, ``--methods``, ``--runs``).
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any

import numpy as np

from sdk.fileio import write_text_atomic

from .accuracy import SETS, dataset_spec
from .latency import RESULTS_DIR
from .methods import METHODS

CANDIDATES: tuple[tuple[str, float | None], ...] = (
    ("max", None), ("top_mean", 0.001), ("top_mean", 0.01), ("top_mean", 0.05),
)
"""(image score, top fraction) pairs computed from the graph's maps."""
REFINEMENT = "refinement"


def candidate_name(image_score: str, top_fraction: float | None) -> str:
    """``max`` or ``top_mean:1%``."""
    return image_score if top_fraction is None else f"{image_score}:{top_fraction * 100:g}%"


def synthetic_defects(images: np.ndarray, seed: int) -> np.ndarray:
    """Copies of good images with synthetic defects: one self cut-paste (DRD) and one simplex-noise box (RD++) each.

    Args:
        images: (N, H, W, 3) uint8 RGB good images at the model size.
        seed: Seed of the draws.

    Returns:
        (2N, H, W, 3) uint8 RGB.
    """
    import torch

    from train.methods.drd.synthesis import cut_paste
    from train.methods.rdpp.synthesis import SimplexNoiseAnomaly

    rng = np.random.default_rng(seed)
    unit = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    pasted = torch.cat([cut_paste(unit[i : i + 1], rng)[0] for i in range(len(unit))])
    noisy = SimplexNoiseAnomaly(min(images.shape[1:3]), seed=seed)(unit, rng)[0]
    both = torch.cat([pasted, noisy]).clamp(0.0, 1.0) * 255.0
    return both.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def graph_outputs(model: Path, images: np.ndarray, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(maps (N, H, W), scores (N,)) of an exported graph on prepared RGB images."""
    from sdk import Detector

    detector = Detector(model)
    maps, scores = [], []
    for start in range(0, len(images), batch):
        for result in detector.predict_batch(list(images[start : start + batch]), rgb=True):
            maps.append(result.anomaly_map)
            scores.append(result.score)
    detector.close()
    return np.stack(maps), np.asarray(scores)


def candidate_aurocs(labels: np.ndarray, maps: np.ndarray) -> dict[str, float]:
    """Image AUROC of every map-based candidate."""
    from export.reference import image_scores
    from sdk.metrics import image_auroc

    return {candidate_name(s, f): image_auroc(labels, image_scores(maps, s, f or 0.01)) for s, f in CANDIDATES}


def study_run(name: str, method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Selection and test AUROC of every candidate for one trained run."""
    from export.onnx import export_onnx
    from sdk.datasets import load_dataset, load_prepared
    from sdk.metrics import image_auroc
    from train.checkpoint import load_checkpoint

    spec, category = dataset_spec(name)
    run_dir = Path(args.runs) / name.replace(":", "-") / method
    metadata, _ = load_checkpoint(run_dir)
    dataset = load_dataset(spec, category, validation_fraction=metadata.training["validation_fraction"],
                           seed=metadata.training["seed"])
    size = metadata.image_size
    good = load_prepared(dataset.validation, size, progress=False)
    selection = np.concatenate([good, synthetic_defects(good, args.seed)])
    selection_labels = np.r_[np.zeros(len(good)), np.ones(2 * len(good))]
    test = load_prepared(dataset.test, size, progress=False)
    test_labels = np.array([s.label for s in dataset.test])

    model = run_dir / "model.onnx"
    if not model.exists():
        export_onnx(run_dir, model, progress=False)
    row: dict[str, Any] = {"set": name, "method": method, "n_selection": len(selection), "n_test": len(test)}
    row["selection"] = candidate_aurocs(selection_labels, graph_outputs(model, selection)[0])
    row["test"] = candidate_aurocs(test_labels, graph_outputs(model, test)[0])
    if args.refinement:
        refined = run_dir / "model_refinement.onnx"
        export_onnx(run_dir, refined, graph_overrides={"refinement": True, "image_score": "max"}, progress=False)
        row["selection"][REFINEMENT] = image_auroc(selection_labels, graph_outputs(refined, selection)[1])
        row["test"][REFINEMENT] = image_auroc(test_labels, graph_outputs(refined, test)[1])
    return row


def choose(rows: list[dict[str, Any]]) -> str:
    """The candidate with the best mean *selection* AUROC over the rows (never test AUROC)."""
    names = list(rows[0]["selection"])
    return max(names, key=lambda n: float(np.mean([r["selection"][n] for r in rows])))


def markdown(rows: list[dict[str, Any]], chosen: str) -> str:
    names = list(rows[0]["selection"])
    header = "| set | method | " + " | ".join(names) + " |"
    rule = "|---|---|" + "---:|" * len(names)

    def table(key: str) -> list[str]:
        lines = [header, rule]
        for r in rows:
            best = max(r[key].values())
            cells = [f"**{r[key][n]:.3f}**" if r[key][n] == best else f"{r[key][n]:.3f}" for n in names]
            lines.append(f"| {r['set']} | {r['method']} | " + " | ".join(cells) + " |")
        means = [float(np.mean([r[key][n] for r in rows])) for n in names]
        lines.append("| **mean** | | " + " | ".join(f"{m:.3f}" for m in means) + " |")
        return lines

    return "\n".join([
        "# Image score functions on every set",
        "",
        f"{datetime.date.today().isoformat()}; models from `python -m benchmarks.accuracy` (default recipe, seed 0); "
        "scores from the exported graphs' own maps (ONNX Runtime). Reproduce: `python -m benchmarks.scores`.",
        "",
        "## Selection set (held-out good training images vs the same images with synthetic defects)",
        "",
        "What chooses: image AUROC of good vs synthetic (one DRD cut-paste and one RD++ simplex-noise box per image).",
        "",
        *table("selection"),
        "",
        f"**Chosen on the selection set: `{chosen}`** (best mean).",
        "",
        "## Test set (reported only; never used to choose)",
        "",
        *table("test"),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS, help="sets (default: all four)")
    parser.add_argument("--methods", nargs="+", default=["rd4ad"], choices=list(METHODS),
                        help="methods whose runs to study (default: rd4ad)")
    parser.add_argument("--runs", default="runs/accuracy", help="folder of benchmarks.accuracy's runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic defects (default: 0)")
    parser.add_argument("--no-refinement", dest="refinement", action="store_false",
                        help="skip the refinement candidate (it needs one more export per run)")
    parser.add_argument("--out", default=str(RESULTS_DIR / "scores.md"), help="markdown output")
    args = parser.parse_args(argv)
    rows = []
    for name in args.sets:
        for method in args.methods:
            rows.append(study_run(name, method, args))
            print(rows[-1], flush=True)
    chosen = choose(rows)
    write_text_atomic(args.out, markdown(rows, chosen))
    print(f"chosen on the selection set: {chosen}; written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
