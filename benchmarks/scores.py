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
  averages out single noisy pixels on good parts;
* feature pooling (:data:`FEATURE_POOLS`; the papers' none): teacher and student features averaged over N x N
  neighbourhoods before the cosine, so that a position is compared as a patch (as PatchCore compares patches).

**Choosing without test images.** Every candidate is scored on a *selection set* built from the run's held-out good
training images only: those images against copies of them with synthetic defects (DRD's self cut-paste and RD++'s
simplex-noise box, one of each per image: :mod:`train.selection`). The candidate with the best mean selection
image AUROC over the sets is the one to keep. Test image and pixel AUROC are reported beside it, never used to choose.
A blur σ or a pooling is kept by the issue's rule on the selection set: it beats the papers' value on image or pixel
AUROC on most sets and loses more than 0.005 on none.

Run: ``python -m benchmarks.scores`` after ``python -m benchmarks.accuracy`` (``--sets``, ``--methods``, ``--runs``);
writes ``scores.md``, ``blur.md`` and ``pool.md`` (``--only blur``: the blur study alone).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
from dataclasses import dataclass
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
FEATURE_POOLS = (1, 3, 5)
"""Feature pooling candidates: N x N averages of teacher and student features before the cosine (1: none)."""
PAPERS_POOL = 1
"""The papers' pooling (none): the head's default."""
POOL_OUT = str(RESULTS_DIR / "pool.md")
"""Where the feature-pooling study writes by default."""
STUDIES = ("scores", "blur", "pool")
"""What ``--only`` chooses from: the scales/score study and the head-setting studies."""


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


@dataclass(frozen=True)
class HeadSettingStudy:
    """One export-time setting of the head, measured at candidate values against the papers' value.

    Attributes:
        name: The study's name: its ``--only`` value and its key in a row.
        setting: The :class:`~train.components.anomaly_map.AnomalyMapHead` argument it varies.
        values: The candidate values, the papers' among them.
        papers: The papers' value (the head's default).
        symbol: The setting's short name in the text (``σ``, ``pool``).
        column: The first column's header in the table.
        title: The table's heading.
        out: Where its table is written by default.
    """

    name: str
    setting: str
    values: tuple[float, ...]
    papers: float
    symbol: str
    column: str
    title: str
    out: str

    def key(self, value: float) -> str:
        """The value as a row's key: ``"4"``, ``"0.5"``."""
        return f"{value:g}"


HEAD_STUDIES = {
    "blur": HeadSettingStudy("blur", "sigma", BLUR_SIGMAS, PAPERS_SIGMA, "σ", "σ (px)", "Blur σ of the head", BLUR_OUT),
    "pool": HeadSettingStudy("pool", "feature_pool", FEATURE_POOLS, PAPERS_POOL, "pool", "pool N (N × N)",
                             "Feature pooling of the head", POOL_OUT),
}
"""The head settings studied one at a time, each with the run's other head settings kept."""


def head_variants(graph: Any, images: np.ndarray, study: HeadSettingStudy,
                  batch: int = 8) -> tuple[dict[float, np.ndarray], dict[float, np.ndarray]]:
    """Image scores and smoothed maps of the run's own head (scales, image score, refinement, blur, pooling) with
    only ``study.setting`` changed, at every candidate value.

    Args:
        graph: A :class:`~train.graph.DetectorGraph` in eval mode.
        images: (N, H, W, 3) uint8 RGB at the model size.
        study: Which setting to vary.
        batch: Images per forward pass.

    Returns:
        ``(scores, maps)``: per value of ``study.values``, (N,) image scores and (N, H, W) float32 maps.
    """
    import torch

    from train.components.anomaly_map import AnomalyMapHead

    head = graph.head
    settings = {"sigma": head.sigma, "combine": head.combine, "refinement": head.refinement,
                "image_score": head.image_score, "top_fraction": head.top_fraction, "map_strides": head.map_strides,
                "feature_pool": head.feature_pool}
    heads = {value: AnomalyMapHead(head.image_size, **{**settings, study.setting: value}) for value in study.values}
    scores: dict[float, list[np.ndarray]] = {value: [] for value in study.values}
    maps: dict[float, list[np.ndarray]] = {value: [] for value in study.values}
    with torch.no_grad():
        for start in range(0, len(images), batch):
            teacher, student = graph.net(graph.normalize(torch.from_numpy(images[start : start + batch])))
            for value, variant in heads.items():  # the head's own forward, one setting changed
                smoothed, score = variant(teacher, student)
                scores[value].append(score.numpy())
                maps[value].append(smoothed.numpy())
    return ({v: np.concatenate(s) for v, s in scores.items()},
            {v: np.concatenate(m) for v, m in maps.items()})


def head_setting_study(graph: Any, study: HeadSettingStudy, selection: SelectionSet, test: np.ndarray,
                       test_labels: np.ndarray, test_masks: np.ndarray | None) -> dict[str, dict[str, float | None]]:
    """Selection and test AUROC (image, pixel) and test AUPRO of the run's head at every value of ``study``.

    Returns:
        ``{study.key(value): {"selection_image", "selection_pixel", "test_image", "test_pixel", "test_aupro"}}``.
    """
    selection_scores, selection_maps = head_variants(graph, selection.images, study)
    test_scores, test_maps = head_variants(graph, test, study)
    return {study.key(value): candidate_metrics(selection, selection_scores[value], selection_maps[value],
                                                test_labels, test_scores[value], test_maps[value], test_masks)
            for value in study.values}


def candidate_metrics(selection: SelectionSet, selection_scores: np.ndarray, selection_maps: np.ndarray,
                      test_labels: np.ndarray, test_scores: np.ndarray, test_maps: np.ndarray,
                      test_masks: np.ndarray | None) -> dict[str, float | None]:
    """One candidate's ``selection_image``, ``selection_pixel``, ``test_image``, ``test_pixel`` and ``test_aupro``
    (the last two None without test masks)."""
    from sdk.metrics import aupro, image_auroc, pixel_auroc

    annotated = test_masks is not None
    return {
        "selection_image": image_auroc(selection.labels, selection_scores),
        "selection_pixel": pixel_auroc(selection.masks, selection_maps),
        "test_image": image_auroc(test_labels, test_scores),
        "test_pixel": pixel_auroc(test_masks, test_maps) if annotated else None,
        "test_aupro": aupro(test_masks, test_maps) if annotated else None,
    }


def verdict(rows: list[dict[str, Any]], study: HeadSettingStudy, key: str) -> str:
    """The keep rule on the *selection* set for one value against the papers' (never test AUROC): ``kept``, or why
    not."""
    papers_key = study.key(study.papers)
    if key == papers_key:
        return "papers' (default)"
    helped, hurt = 0, []
    for row in rows:
        candidate, papers = row[study.name][key], row[study.name][papers_key]
        deltas = [candidate[k] - papers[k] for k in ("selection_image", "selection_pixel")]
        helped += any(d > 0 for d in deltas)
        hurt += [f"{row['set']} {d:+.3f}" for d in deltas if d < -KEEP_TOLERANCE]
    if hurt:
        return "not kept: loses " + ", ".join(hurt)
    if helped * 2 <= len(rows):
        return f"not kept: helps on {helped} of {len(rows)} sets"
    return f"kept: helps on {helped} of {len(rows)} sets, loses ≤ {KEEP_TOLERANCE} on every set"


@dataclass
class StudyInputs:
    """What a head study reads from one trained run: its graph, rebuilt from the checkpoint, and its images.

    Attributes:
        graph: The run's teacher, student and head, rebuilt from ``checkpoint.pt``.
        dataset: The run's split, remade with its own validation fraction and seed.
        size: The run's input size.
        selection: The held-out good images and their synthetically defective copies (what a choice may read).
        test: (N, H, W, 3) uint8 test images (what the table reports, never what a choice reads).
        test_labels: (N,) int: 0 good, 1 defective.
        test_masks: (N, H, W) ground-truth masks, or None when the set has image labels only.
    """

    graph: Any
    dataset: Any
    size: Any
    selection: SelectionSet
    test: np.ndarray
    test_labels: np.ndarray
    test_masks: np.ndarray | None

    def training_images(self) -> np.ndarray:
        """The run's own training images at its input size."""
        from sdk.datasets import load_prepared

        return load_prepared(self.dataset.train, self.size, progress=False)


def load_study_inputs(run_dir: Path, spec: str, category: str | None, selection_seed: int) -> StudyInputs:
    """Rebuild a trained run and load the images a head study compares candidates on.

    Args:
        run_dir: The run's folder (holding ``checkpoint.pt``).
        spec: The dataset spec the run trained on (a root folder or ``elpv:...``).
        category: The category inside ``spec``, or None.
        selection_seed: Seed of the synthetic defects of the selection set.
    """
    from sdk.datasets import load_dataset, load_prepared
    from train.checkpoint import build_graph_from_checkpoint

    graph, metadata = build_graph_from_checkpoint(run_dir)
    dataset = load_dataset(spec, category, validation_fraction=metadata.training["validation_fraction"],
                           seed=metadata.training["seed"])
    size = metadata.image_size
    annotated = all(s.has_mask_annotation for s in dataset.test)
    return StudyInputs(
        graph=graph, dataset=dataset, size=size,
        selection=SelectionSet.from_good(load_prepared(dataset.validation, size, progress=False), selection_seed),
        test=load_prepared(dataset.test, size, progress=False),
        test_labels=np.array([s.label for s in dataset.test]),
        test_masks=np.stack([s.load_mask(size) for s in dataset.test]) if annotated else None)


def study_run(name: str, method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Selection and test AUROC of every head candidate for one trained run."""
    from sdk.metrics import image_auroc

    inputs = load_study_inputs(run_folder(Path(args.runs), name, method, args.change, {}), *dataset_spec(name),
                               args.seed)
    label = method + "".join(f", {k}={v}" for k, v in args.change.items())
    row: dict[str, Any] = {"set": name, "method": label, "size": str(inputs.size)}
    for study in (HEAD_STUDIES[n] for n in args.only if n in HEAD_STUDIES):
        row[study.name] = head_setting_study(inputs.graph, study, inputs.selection, inputs.test, inputs.test_labels,
                                             inputs.test_masks)
    if "scores" not in args.only:
        return row
    selection_scores, _ = head_candidates(inputs.graph, inputs.selection.images)
    test_scores, pixel = head_candidates(inputs.graph, inputs.test, inputs.test_masks)

    def aurocs(scores: dict[str, dict[str, np.ndarray]], labels: np.ndarray) -> dict[str, float]:
        return {f"{s} / {k}": image_auroc(labels, v) for s, per in scores.items() for k, v in per.items()}

    return {**row, "selection": aurocs(selection_scores, inputs.selection.labels),
            "test": aurocs(test_scores, inputs.test_labels), "pixel": pixel}


def choose(rows: list[dict[str, Any]]) -> str:
    """The candidate with the best mean *selection* AUROC over the rows (never test AUROC)."""
    names = list(rows[0]["selection"])
    return max(names, key=lambda n: float(np.mean([r["selection"][n] for r in rows])))


def study_markdown(rows: list[dict[str, Any]], study: HeadSettingStudy) -> list[str]:
    """One head setting's table: per value and set, selection image / pixel AUROC, then test image / pixel AUROC /
    AUPRO, and the keep rule's verdict."""

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    papers = study.key(study.papers)
    lines = ["", f"## {study.title} (each run's own other head settings)", "",
             "Per set: selection image / pixel AUROC (what chooses) · test image / pixel AUROC / AUPRO (reported "
             f"only). Rule: kept if it beats {study.symbol} = {papers} on the selection set on most sets "
             f"and loses more than {KEEP_TOLERANCE} on none.", "",
             f"| {study.column} | " + " | ".join(f"{r['set']} ({r['method']})" for r in rows)
             + " | on the selection set |",
             "|---:|" + "---|" * len(rows) + "---|"]
    for key in (study.key(v) for v in study.values):
        cells = []
        for row in rows:
            b = row[study.name][key]
            cells.append(f"{cell(b['selection_image'])} / {cell(b['selection_pixel'])} · {cell(b['test_image'])} / "
                         f"{cell(b['test_pixel'])} / {cell(b['test_aupro'])}")
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {verdict(rows, study, key)} |")
    return lines


def study_command(args: argparse.Namespace, study: HeadSettingStudy, out: str) -> str:
    """The command that writes ``study``'s table alone with these runs."""
    return " ".join([f"python -m benchmarks.scores --only {study.name}",
                     *(["--sets", *args.sets] if list(args.sets) != list(SETS) else []),
                     *(f"--change {k}={v}" for k, v in args.change.items()),
                     *([f"--{study.name}-out", out] if out != study.out else [])])


def study_page(rows: list[dict[str, Any]], study: HeadSettingStudy, args: argparse.Namespace, out: str) -> str:
    """The whole markdown page of one head setting's study."""
    where = "every set" if list(args.sets) == list(SETS) else ", ".join(args.sets)
    papers = f"{study.symbol} = {study.key(study.papers)}"
    header = [f"# {study.title} on {where}", "",
              f"{datetime.date.today().isoformat()}; models of `python -m benchmarks.accuracy` (seed 0); maps from the "
              f"exported head's own modules with `{study.setting}` changed; the {papers} row is each checkpoint's own "
              "result as exported (a checkpoint retrained on another processor can differ from `accuracy.md`'s row "
              "as much as another seed does: README, \"How much one training varies\"). "
              f"Reproduce: `{study_command(args, study, out)}`."]
    return "\n".join(header + study_markdown(rows, study)) + "\n"


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
    for study in HEAD_STUDIES.values():
        parser.add_argument(f"--{study.name}-out", default=study.out,
                            help=f"markdown output of the {study.setting} study (default: {study.out})")
    parser.add_argument("--only", nargs="+", default=list(STUDIES), choices=STUDIES,
                        help="run only these studies (default: all): scores (scales and image score), blur (σ), "
                             "pool (feature pooling); each head setting with the run's other settings kept")
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
    for study in (HEAD_STUDIES[n] for n in args.only if n in HEAD_STUDIES):
        out = getattr(args, f"{study.name}_out")
        write_text_atomic(out, study_page(rows, study, args, out))
        print(f"written {out}")
    if "scores" in args.only:
        chosen = choose(rows)
        write_text_atomic(args.out, markdown(rows, chosen, f"{scales_name((0, 1, 2))} / max"))
        print(f"chosen on the selection set: {chosen}; written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
