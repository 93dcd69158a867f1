"""Whitened teacher-student residuals in the anomaly map: does it rank parts better than the papers' cosine?

The head scores a position by the cosine distance between teacher and student features, ``1 - cos(t, s)``, which
is half the squared length of the residual ``r = t/|t| - s/|s|``. That distance treats every direction of ``r``
alike, yet on good parts the student's reconstruction errors are not isotropic: some directions always carry a
large residual (the student's usual error), others almost never do. A defect the student reproduces approximately
may move ``r`` only a little, but in a direction good parts never take. Whitening the residual against its
distribution on good images, the Mahalanobis distance ``(r - mu)^T (Sigma + lambda I)^-1 (r - mu)`` per scale,
measures exactly that (PaDiM scores teacher features this way; here it is the residual of a trained student).

Measured on the runs that ``benchmarks.accuracy`` trained (``runs/accuracy/SET/METHOD``), head settings as exported:

* ``mu`` and ``Sigma`` per scale (strides 8 and 16 for the recipe) from the residuals of the run's **training**
  images (good parts only; never validation or test images), ridge ``lambda`` x the mean variance;
* each scale's map divided by its mean over the training images, so neither scale outweighs the other in the sum;
* then the run's own upsampling, fusion, blur and image score (the exported head's modules).

Candidates are judged by the issue's keep rule on the selection set (held-out good training images against copies
with synthetic defects, :mod:`train.selection`); test AUROC and AUPRO are reported, never used to choose. This is a
study outside the exported graph: a kept candidate would still have to become a head option fitted at export.

Run: ``python -m benchmarks.whitening`` after ``python -m benchmarks.accuracy`` (``--sets``, ``--runs``).
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any

import numpy as np

from sdk.fileio import write_text_atomic

from .accuracy import SETS, dataset_spec, run_folder
from .latency import RESULTS_DIR
from .scores import HeadSettingStudy, candidate_metrics, load_study_inputs, study_markdown

RIDGES = (0.0, 0.01)
"""Candidates: 0 = the papers' cosine distance (no whitening); otherwise the ridge ``lambda`` of the whitening."""
WHITEN_OUT = str(RESULTS_DIR / "whitening.md")
"""Where the study writes by default."""
STUDY = HeadSettingStudy("whiten", "residual whitening", RIDGES, 0.0, "ridge", "ridge λ (0: the papers' cosine)",
                         "Whitened teacher-student residual", WHITEN_OUT)
"""The study as the head-setting tables of :mod:`benchmarks.scores` render it."""


def normalized_residuals(graph: Any, images: np.ndarray, batch: int = 8) -> list[Any]:
    """Per map level of the run's head: (N, C, h, w) residuals ``t/|t| - s/|s|``.

    Args:
        graph: A :class:`~train.graph.DetectorGraph` in eval mode.
        images: (N, H, W, 3) uint8 RGB at the model size.
        batch: Images per forward pass.
    """
    import torch
    import torch.nn.functional as F

    levels = graph.head.map_levels
    out: list[list[Any]] = [[] for _ in levels]
    with torch.no_grad():
        for start in range(0, len(images), batch):
            teacher, student = graph.net(graph.normalize(torch.from_numpy(images[start : start + batch])))
            for j, level in enumerate(levels):
                residual = F.normalize(teacher[level], dim=1, eps=1e-8) - F.normalize(student[level], dim=1, eps=1e-8)
                out[j].append(residual)
    return [torch.cat(o) for o in out]


def fit_whitening(residuals: Any, ridge: float) -> tuple[Any, Any]:
    """Mean ``mu`` (C,) and a whitening matrix ``w`` (C, C) with ``w w^T = (Sigma + ridge * mean variance * I)^-1``.

    Args:
        residuals: (N, C, h, w) residuals of good images.
        ridge: Regularisation as a share of the mean variance (> 0).
    """
    import torch

    vectors = residuals.permute(0, 2, 3, 1).reshape(-1, residuals.shape[1]).double()
    mu = vectors.mean(0)
    cov = torch.cov(vectors.T)
    cov = cov + ridge * cov.diagonal().mean() * torch.eye(len(cov), dtype=cov.dtype)
    return mu.float(), torch.linalg.cholesky(torch.linalg.inv(cov)).float()


def residual_distance(residual: Any, whitening: tuple[Any, Any] | None) -> Any:
    """(N, C, h, w) residuals → (N, h, w) distances: ``|r|^2 / 2`` (the cosine distance) or the whitened one."""
    import torch

    if whitening is None:
        return 0.5 * (residual**2).sum(1)
    mu, w = whitening
    z = torch.einsum("nchw,cd->ndhw", residual - mu.view(1, -1, 1, 1), w)
    return (z**2).sum(1)


class ResidualMaps:
    """Anomaly maps and image scores from residuals with the run's own upsampling, fusion, blur and image score.

    Args:
        head: The run's :class:`~train.components.anomaly_map.AnomalyMapHead`.
        train_residuals: Per level, residuals of the training images (what the whitening and the balance fit on).
        ridge: 0 for the papers' cosine distance, else the whitening's ridge.
    """

    def __init__(self, head: Any, train_residuals: list[Any], ridge: float) -> None:
        self.head = head
        self.whitening = [fit_whitening(r, ridge) if ridge > 0 else None for r in train_residuals]
        self.balance = ([float(residual_distance(r, w).mean()) for r, w in zip(train_residuals, self.whitening,
                                                                                strict=True)]
                        if ridge > 0 else [1.0] * len(train_residuals))

    def __call__(self, residuals: list[Any], batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Per-level residuals of N images → ((N, H, W) smoothed maps, (N,) image scores)."""
        import torch

        from export.reference import image_scores

        maps = []
        with torch.no_grad():
            for start in range(0, len(residuals[0]), batch):
                upsampled = [self.head.upsample(residual_distance(r[start : start + batch], w) / k)
                             for r, w, k in zip(residuals, self.whitening, self.balance, strict=True)]
                maps.append(self.head.blur(self.head.fuse(upsampled)).numpy())
        smoothed = np.concatenate(maps)
        return smoothed, image_scores(smoothed, self.head.image_score, self.head.top_fraction)


def study_run(name: str, method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Selection and test metrics of every candidate for one trained run."""
    inputs = load_study_inputs(run_folder(Path(args.runs), name, method, {}, {}), *dataset_spec(name), args.seed)
    graph, selection, labels, masks = inputs.graph, inputs.selection, inputs.test_labels, inputs.test_masks
    train_residuals = normalized_residuals(graph, inputs.training_images())
    selection_residuals = normalized_residuals(graph, selection.images)
    test_residuals = normalized_residuals(graph, inputs.test)
    results = {}
    for ridge in STUDY.values:
        maps = ResidualMaps(graph.head, train_residuals, ridge)
        selection_maps, selection_scores = maps(selection_residuals)
        test_maps, test_scores = maps(test_residuals)
        results[STUDY.key(ridge)] = candidate_metrics(selection, selection_scores, selection_maps, labels, test_scores,
                                                      test_maps, masks)
    return {"set": name, "method": method, STUDY.name: results}


def page(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The markdown page."""
    command = " ".join(["python -m benchmarks.whitening", *(["--sets", *args.sets] if args.sets != list(SETS) else []),
                        *(["--method", args.method] if args.method != "rd4ad" else [])])
    header = [f"# {STUDY.title} on {', '.join(args.sets)}", "",
              f"{datetime.date.today().isoformat()}; models of `python -m benchmarks.accuracy` (recipe, seed 0, "
              "retrained on this machine: a checkpoint can differ from `accuracy.md`'s row as much as another seed "
              "does); the ridge 0 row is the exported head's own cosine map. Whitening statistics from each run's "
              "training images; see the module docstring of `benchmarks/whitening.py` for the computation. "
              f"Reproduce: `{command}`."]
    return "\n".join(header + study_markdown(rows, STUDY)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS, help="sets (default: all four)")
    parser.add_argument("--method", default="rd4ad", help="method whose recipe runs to study (default: rd4ad)")
    parser.add_argument("--runs", default="runs/accuracy", help="folder of benchmarks.accuracy's runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic defects (default: 0)")
    parser.add_argument("--out", default=WHITEN_OUT, help=f"markdown output (default: {WHITEN_OUT})")
    args = parser.parse_args(argv)
    rows = []
    for name in args.sets:
        rows.append(study_run(name, args.method, args))
        print({"set": name, **rows[-1][STUDY.name]}, flush=True)
    write_text_atomic(args.out, page(rows, args))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
