"""The anomaly-map head on every set: which feature scales to fuse, and which image score separates parts best.

The papers fuse the distance maps of all three teacher scales (strides 4, 8, 16) and score an image by the maximum
of the smoothed map. A map that localises well can still rank parts poorly when one bright pixel on a good part
outweighs a faint, long defect; and the finest scale can add texture noise. Measured here on the models that
``benchmarks.accuracy`` trained (``runs/accuracy/SET/METHOD``), with the exported head's own modules (the same
cosine distance, upsampling, fusion and blur the ONNX graph runs; parity is checked at every export):

* scales: every non-empty subset of the three (``4+8+16`` is the papers');
* image score: ``max`` (the papers'), ``top_mean:F`` (the mean of the map's top F share of pixels, F = 0.1 %, 1 %,
  5 %) and ``refinement`` (DRD's ``(1 + v_k*) · max``, for any method);
* the blur's Gaussian σ (:data:`BLUR_SIGMAS`; the papers' 4 px), with each run's own scales and image score: a
  narrow kernel keeps a small defect's peak, a wide one sums the responses along a long or diffuse defect and
  averages out single noisy pixels on good parts.

**Choosing without test images.** Every candidate is scored on a *selection set* built from the run's held-out good
training images only: those images against copies of them with synthetic defects (DRD's self cut-paste and RD++'s
simplex-noise box, one of each per image: :mod:`train.selection`). The candidate with the best mean selection
image AUROC over the sets is the one to keep. Test image and pixel AUROC are reported beside it, never used to choose.
A blur σ is kept by the issue's rule on the selection set: it beats the papers' σ on image or pixel AUROC on most
sets and loses more than 0.005 on none.

Run: ``python -m benchmarks.scores`` after ``python -m benchmarks.accuracy`` (``--sets``, ``--methods``, ``--runs``);
writes ``scores.md`` and ``blur.md`` (``--blur-only``: the blur study alone).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from sdk.fileio import write_text_atomic
from train.selection import SelectionSet

from .accuracy import HEAD_SETTINGS, SETS, dataset_spec, parse_changes, run_folder
from .latency import RESULTS_DIR
from .methods import METHODS

SCALE_NAMES = ("4", "8", "16")
"""The teacher scales by stride, in the order the head receives them."""
SCORES: tuple[tuple[str, float | None], ...] = (
    ("max", None), ("top_mean", 0.001), ("top_mean", 0.01), ("top_mean", 0.05), ("refinement", None),
)
"""(image score, top fraction) candidates; ``refinement`` is DRD's refined maximum."""


def score_name(image_score: str, top_fraction: float | None) -> str:
    """``max``, ``refinement`` or ``top_mean:1%``."""
    return image_score if top_fraction is None else f"{image_score}:{top_fraction * 100:g}%"


def scales_name(scales: tuple[int, ...]) -> str:
    """``4+8+16`` for (0, 1, 2)."""
    return "+".join(SCALE_NAMES[i] for i in scales)


SCALE_SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(range(3), r)]
"""Every non-empty subset of the three scales."""
BLUR_SIGMAS = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Gaussian σ candidates of the map's blur, in pixels of the model input (4: the papers', the head's default)."""
PAPERS_SIGMA = 4.0
"""The papers' σ: :data:`export.reference.SIGMA` and the head's default (not imported: ``--help`` stays light)."""
KEEP_TOLERANCE = 0.005
"""The issue's keep rule: a candidate may lose at most this much AUROC on any set."""
BLUR_OUT = str(RESULTS_DIR / "blur.md")
"""Where the blur study writes by default."""


def head_candidates(graph: Any, images: np.ndarray, masks: np.ndarray | None = None,
                    batch: int = 8) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float | None]]:
    """Image scores of every (scales, score) candidate, and the pixel AUROC of every scale subset.

    Args:
        graph: A :class:`~train.graph.DetectorGraph` in eval mode (its head's modules make the maps).
        images: (N, H, W, 3) uint8 RGB at the model size.
        masks: (N, H, W) bool ground truth, for pixel AUROC (None: not computed).
        batch: Images per forward pass.

    Returns:
        ``(scores, pixel)``: ``scores[scales_name][score_name]`` (N,) arrays; ``pixel[scales_name]``.
    """
    import torch

    from export.reference import image_scores
    from sdk.metrics import pixel_auroc
    from train.components.anomaly_map import cosine_distance_map, refinement_peak

    head = graph.head
    scores: dict[str, dict[str, list[np.ndarray]]] = {scales_name(s): {score_name(*c): [] for c in SCORES}
                                                       for s in SCALE_SUBSETS}
    maps: dict[str, list[np.ndarray]] = {scales_name(s): [] for s in SCALE_SUBSETS}
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(images[start : start + batch])
            teacher, student = graph.net(graph.normalize(x))
            distances = [cosine_distance_map(t, s) for t, s in zip(teacher, student, strict=True)]
            upsampled = [head.upsample(d) for d in distances]
            for subset in SCALE_SUBSETS:
                name = scales_name(subset)
                smoothed = head.blur(head.fuse([upsampled[i] for i in subset]))
                flat = smoothed.numpy()
                peak = refinement_peak([distances[i] for i in subset], [upsampled[i] for i in subset]).numpy()
                for kind, fraction in SCORES:
                    if kind == "refinement":
                        value = image_scores(flat, "max") * (1.0 + peak)
                    else:
                        value = image_scores(flat, kind, fraction or 0.01)
                    scores[name][score_name(kind, fraction)].append(value)
                if masks is not None:
                    maps[name].append(flat)
    joined = {n: {k: np.concatenate(v) for k, v in per.items()} for n, per in scores.items()}
    pixel = {n: (pixel_auroc(masks, np.concatenate(m)) if masks is not None else None) for n, m in maps.items()}
    return joined, pixel


def blur_candidates(graph: Any, images: np.ndarray, batch: int = 8) -> tuple[dict[float, np.ndarray],
                                                                             dict[float, np.ndarray]]:
    """Image scores and smoothed maps of the run's own head (scales, image score, refinement) under every σ.

    Args:
        graph: A :class:`~train.graph.DetectorGraph` in eval mode.
        images: (N, H, W, 3) uint8 RGB at the model size.
        batch: Images per forward pass.

    Returns:
        ``(scores, maps)``: per σ of :data:`BLUR_SIGMAS`, (N,) image scores and (N, H, W) float32 maps.
    """
    import torch

    from train.components.anomaly_map import AnomalyMapHead

    head = graph.head
    heads = {sigma: AnomalyMapHead(head.image_size, sigma=sigma, combine=head.combine, refinement=head.refinement,
                                   image_score=head.image_score, top_fraction=head.top_fraction,
                                   map_strides=head.map_strides, feature_pool=head.feature_pool)
             for sigma in BLUR_SIGMAS}
    scores: dict[float, list[np.ndarray]] = {sigma: [] for sigma in BLUR_SIGMAS}
    maps: dict[float, list[np.ndarray]] = {sigma: [] for sigma in BLUR_SIGMAS}
    with torch.no_grad():
        for start in range(0, len(images), batch):
            teacher, student = graph.net(graph.normalize(torch.from_numpy(images[start : start + batch])))
            for sigma, sigma_head in heads.items():  # the head's own forward, only σ changed
                smoothed, score = sigma_head(teacher, student)
                scores[sigma].append(score.numpy())
                maps[sigma].append(smoothed.numpy())
    return ({s: np.concatenate(v) for s, v in scores.items()},
            {s: np.concatenate(v) for s, v in maps.items()})


def blur_study(graph: Any, selection: SelectionSet, test: np.ndarray, test_labels: np.ndarray,
               test_masks: np.ndarray | None) -> dict[str, dict[str, float | None]]:
    """Selection and test AUROC (image, pixel) and test AUPRO of the run's head under every σ of :data:`BLUR_SIGMAS`.

    Returns:
        ``{str(σ): {"selection_image", "selection_pixel", "test_image", "test_pixel", "test_aupro"}}``.
    """
    from sdk.metrics import aupro, image_auroc, pixel_auroc

    selection_scores, selection_maps = blur_candidates(graph, selection.images)
    test_scores, test_maps = blur_candidates(graph, test)
    study: dict[str, dict[str, float | None]] = {}
    for sigma in BLUR_SIGMAS:
        annotated = test_masks is not None
        study[f"{sigma:g}"] = {
            "selection_image": image_auroc(selection.labels, selection_scores[sigma]),
            "selection_pixel": pixel_auroc(selection.masks, selection_maps[sigma]),
            "test_image": image_auroc(test_labels, test_scores[sigma]),
            "test_pixel": pixel_auroc(test_masks, test_maps[sigma]) if annotated else None,
            "test_aupro": aupro(test_masks, test_maps[sigma]) if annotated else None,
        }
    return study


def blur_verdict(rows: list[dict[str, Any]], sigma: str) -> str:
    """The keep rule on the *selection* set for one σ against the papers' (never test AUROC): ``kept``, or why not."""
    if sigma == f"{PAPERS_SIGMA:g}":
        return "papers' (default)"
    helped, hurt = 0, []
    for row in rows:
        blur, papers = row["blur"][sigma], row["blur"][f"{PAPERS_SIGMA:g}"]
        deltas = [blur[k] - papers[k] for k in ("selection_image", "selection_pixel")]
        helped += any(d > 0 for d in deltas)
        hurt += [f"{row['set']} {d:+.3f}" for d in deltas if d < -KEEP_TOLERANCE]
    if hurt:
        return "not kept: loses " + ", ".join(hurt)
    if helped * 2 <= len(rows):
        return f"not kept: helps on {helped} of {len(rows)} sets"
    return f"kept: helps on {helped} of {len(rows)} sets, loses ≤ {KEEP_TOLERANCE} on every set"


def study_run(name: str, method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Selection and test AUROC of every head candidate for one trained run."""
    from sdk.datasets import load_dataset, load_prepared
    from sdk.metrics import image_auroc
    from train.checkpoint import build_graph_from_checkpoint

    spec, category = dataset_spec(name)
    run_dir = run_folder(Path(args.runs), name, method, args.change, {})
    graph, metadata = build_graph_from_checkpoint(run_dir)
    label = method + "".join(f", {k}={v}" for k, v in args.change.items())
    dataset = load_dataset(spec, category, validation_fraction=metadata.training["validation_fraction"],
                           seed=metadata.training["seed"])
    size = metadata.image_size
    good = load_prepared(dataset.validation, size, progress=False)
    selection = SelectionSet.from_good(good, args.seed)
    test = load_prepared(dataset.test, size, progress=False)
    test_labels = np.array([s.label for s in dataset.test])
    annotated = all(s.has_mask_annotation for s in dataset.test)
    masks = np.stack([s.load_mask(size) for s in dataset.test]) if annotated else None

    blur = blur_study(graph, selection, test, test_labels, masks)
    if args.blur_only:
        return {"set": name, "method": label, "size": str(size), "blur": blur}
    selection_scores, _ = head_candidates(graph, selection.images)
    test_scores, pixel = head_candidates(graph, test, masks)

    def aurocs(scores: dict[str, dict[str, np.ndarray]], labels: np.ndarray) -> dict[str, float]:
        return {f"{s} / {k}": image_auroc(labels, v) for s, per in scores.items() for k, v in per.items()}

    return {"set": name, "method": label, "size": str(size), "selection": aurocs(selection_scores, selection.labels),
            "test": aurocs(test_scores, test_labels), "pixel": pixel, "blur": blur}


def choose(rows: list[dict[str, Any]]) -> str:
    """The candidate with the best mean *selection* AUROC over the rows (never test AUROC)."""
    names = list(rows[0]["selection"])
    return max(names, key=lambda n: float(np.mean([r["selection"][n] for r in rows])))


def blur_markdown(rows: list[dict[str, Any]], head: str) -> list[str]:
    """The blur table: per σ and set, selection image / pixel AUROC, then test image / pixel AUROC / AUPRO."""

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines = ["", f"## Blur σ of the head ({head})", "",
             "Per set: selection image / pixel AUROC (what chooses) · test image / pixel AUROC / AUPRO (reported "
             "only). "
             f"Rule: kept if it beats σ = {PAPERS_SIGMA:g} on the selection set on most sets and loses more than "
             f"{KEEP_TOLERANCE} on none.", "",
             "| σ (px) | " + " | ".join(f"{r['set']} ({r['method']})" for r in rows) + " | on the selection set |",
             "|---:|" + "---|" * len(rows) + "---|"]
    for sigma in (f"{s:g}" for s in BLUR_SIGMAS):
        cells = []
        for row in rows:
            b = row["blur"][sigma]
            cells.append(f"{cell(b['selection_image'])} / {cell(b['selection_pixel'])} · {cell(b['test_image'])} / "
                         f"{cell(b['test_pixel'])} / {cell(b['test_aupro'])}")
        lines.append(f"| {sigma} | " + " | ".join(cells) + f" | {blur_verdict(rows, sigma)} |")
    return lines


def markdown(rows: list[dict[str, Any]], chosen: str, papers: str) -> str:
    names = list(rows[0]["selection"])
    mean_selection = {n: float(np.mean([r["selection"][n] for r in rows])) for n in names}
    ranked = sorted(names, key=lambda n: -mean_selection[n])
    lines = [
        "# The anomaly-map head on every set: scales and image score",
        "",
        f"{datetime.date.today().isoformat()}; models of `python -m benchmarks.accuracy` (recipe, seed 0); maps from "
        "the exported head's own modules. Reproduce: `python -m benchmarks.scores`.",
        "",
        "**Selection set** (what chooses): each run's held-out good training images against the same images with "
        "synthetic defects (one DRD cut-paste and one RD++ simplex-noise box each). **Test** columns are reported, "
        "never used to choose.",
        "",
        f"Chosen on the selection set: **`{chosen}`**; the papers' head: `{papers}`.",
        "",
        "| scales / image score | mean selection AUROC | "
        + " | ".join(f"{r['set']} selection / test image AUROC" for r in rows) + " |",
        "|---|---:|" + "---:|" * len(rows),
    ]
    for n in ranked:
        mark = " (chosen)" if n == chosen else " (papers')" if n == papers else ""
        cells = [f"{r['selection'][n]:.3f} / {r['test'][n]:.3f}" for r in rows]
        lines.append(f"| `{n}`{mark} | {mean_selection[n]:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "Pixel AUROC on the test set by scales (the image score does not change the map):", "",
              "| scales | " + " | ".join(r["set"] for r in rows) + " |", "|---|" + "---:|" * len(rows)]
    for subset in SCALE_SUBSETS:
        s = scales_name(subset)
        cells = ["n/a" if r["pixel"][s] is None else f"{r['pixel'][s]:.3f}" for r in rows]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS, help="sets (default: all four)")
    parser.add_argument("--methods", nargs="+", default=["rd4ad"], choices=list(METHODS),
                        help="methods whose runs to study (default: rd4ad)")
    parser.add_argument("--runs", default="runs/accuracy", help="folder of benchmarks.accuracy's runs")
    parser.add_argument("--change", action="append", default=[], metavar="KEY=VALUE",
                        help="study the runs of this benchmarks.accuracy ablation (e.g. backbone=efficientnet_lite1) "
                             "instead of the recipe's; repeatable")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic defects (default: 0)")
    parser.add_argument("--out", default=str(RESULTS_DIR / "scores.md"), help="markdown output")
    parser.add_argument("--blur-out", default=BLUR_OUT, help="markdown output of the blur study")
    parser.add_argument("--blur-only", action="store_true",
                        help="study only the blur σ (with each run's own scales and score): writes --blur-out alone")
    args = parser.parse_args(argv)
    args.change = parse_changes(args.change)
    head_changes = sorted(set(args.change) & HEAD_SETTINGS)
    if head_changes:
        parser.error(f"--change {head_changes}: head settings are what this study varies; --change picks a "
                     "trained ablation (a training setting such as backbone or steps)")
    rows = []
    for name in args.sets:
        for method in args.methods:
            rows.append(study_run(name, method, args))
            print({k: v for k, v in rows[-1].items() if k not in ("selection", "test")}, flush=True)
    command = " ".join(["python -m benchmarks.scores --blur-only",
                        *(["--sets", *args.sets] if list(args.sets) != list(SETS) else []),
                        *(f"--change {k}={v}" for k, v in args.change.items()),
                        *(["--blur-out", args.blur_out] if args.blur_out != BLUR_OUT else [])])
    where = "every set" if list(args.sets) == list(SETS) else ", ".join(args.sets)
    header = [f"# The anomaly-map head's blur on {where}", "",
              f"{datetime.date.today().isoformat()}; models of `python -m benchmarks.accuracy` (seed 0); maps from the "
              "exported head's own modules with the blur's σ changed; the σ = 4 row is each checkpoint's own result "
              "as exported (a checkpoint retrained on another processor can differ from `accuracy.md`'s row by about "
              f"0.02 image AUROC). Reproduce: `{command}`."]
    write_text_atomic(args.blur_out, "\n".join(header + blur_markdown(rows, "each run's own scales and score")) + "\n")
    print(f"written {args.blur_out}")
    if not args.blur_only:
        chosen = choose(rows)
        write_text_atomic(args.out, markdown(rows, chosen, f"{scales_name((0, 1, 2))} / max"))
        print(f"chosen on the selection set: {chosen}; written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
