"""One accuracy table over every public set: the four methods with the default recipe, and a nearest-neighbour
baseline beside them; write ``benchmarks/results/accuracy.md``.

Sets: MVTec AD bottle (``RDEDGE_MVTEC_ROOT``), KolektorSDD and MVTec 3D-AD tire (``RDEDGE_INDUSTRIAL_ROOT``), ELPV
mono cells (``pip install elpv-dataset``). Each RD method is trained with the default recipe (``TrainConfig``
defaults: EfficientNet-Lite0, input size auto, 1,000 optimiser steps, the last tenth of them on the student's
running batch-norm statistics, batch 16, seed 0), exported to ONNX and evaluated through ``sdk.Detector`` (metrics
from the exported graph). The baseline (:mod:`benchmarks.patchcore`) uses the same teacher, size, training split
and held-out calibration images. Nothing is chosen on test images.

Run: ``python -m benchmarks.accuracy`` (all) or ``--sets kolektorsdd --methods rd4ad baseline``; see ``--help``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

from sdk.metadata import MEDIAN_MAD
from train.config import DEFAULT_STEPS, TrainConfig, parse_key_values

from .latency import RESULTS_DIR, collect_rows, summarize, time_calls
from .methods import METHODS, evaluate_model, onnx_latency_ms
from .nonsquare import industrial_root

HEAD_SETTINGS = frozenset({"image_score", "top_fraction", "map_strides", "map_sigma", "map_pool"})
"""Settings applied at export: a change of only these reuses the recipe's checkpoint (no retraining)."""
NOT_COMPARED_ON_REUSE = HEAD_SETTINGS | {"data", "out", "category", "image_size", "weights", "device", "amp"}
"""Settings a reused checkpoint need not match: the head (applied at export), paths (a folder may move; the weights
file is resolved to a local path), and what ``auto`` resolves at training (input size, device, precision)."""
BASELINE = "baseline"
"""The nearest-neighbour baseline's name in ``--methods`` and in the table."""
SETS = ("bottle", "kolektorsdd", "tire", "elpv:mono")
OLD_RULE_MARK = " †"
"""After an F1 measured at the thresholds of the rule before :data:`sdk.metadata.MEDIAN_MAD` (mean + 3 std)."""
ROW_KEY = ("set", "method", "change")
"""A row's name in the table's JSON store (``accuracy.json`` beside ``accuracy.md``): a rerun replaces it."""
RECIPE_SEED = 0
"""The recipe's seed: rows of any other seed (``--seed N``) are labelled ``seed=N`` and train in their own folders."""
METRICS = ("image_auroc", "pixel_auroc", "aupro", "f1", "n_images", "n_anomalous")


def mvtec_root() -> str:
    """``RDEDGE_MVTEC_ROOT``, or ``../shared/data/mvtec`` beside the repository."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mvtec"
    return os.environ.get("RDEDGE_MVTEC_ROOT", str(default))


def dataset_spec(name: str) -> tuple[str, str | None]:
    """A set's name → (spec, category) for ``load_dataset`` / ``TrainConfig``."""
    if name.startswith("elpv:"):
        return name, None
    if name == "bottle":
        return mvtec_root(), name
    return industrial_root(), name


def run_method(name: str, method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train (default recipe), export and evaluate one RD method on one set."""
    from export.onnx import export_onnx
    from train.checkpoint import load_checkpoint
    from train.config import head_options
    from train.trainer import LAST_STEP_DIR, train

    spec, category = dataset_spec(name)
    run_dir = run_folder(Path(args.runs), name, method, args.change, args.method_options, seed=args.seed)
    config = row_config(spec, category, run_dir, method, args)
    action = training_action(run_dir, reuse=args.reuse, resume=args.resume)
    if action != "reuse":
        train(config, progress=not args.quiet, resume=action == "resume")
    metadata, _ = load_checkpoint(run_dir)
    stale = stale_settings(metadata.training, config) if action == "reuse" else []
    if stale:  # e.g. a recipe checkpoint trained before a default changed
        raise SystemExit(f"--reuse: {run_dir} was trained with other settings than this row's ({'; '.join(stale)}); "
                         "move it away (or run without --reuse) to train the row afresh")
    # The head is an export-time option: a reused checkpoint is exported with the recipe's.
    report = export_onnx(run_dir, progress=not args.quiet, graph_overrides=head_options(config))
    metrics = evaluate_model(report.path, spec, category)
    row = {"set": name, "method": method, **{k: metrics[k] for k in METRICS},
           "train_minutes": metadata.training["train_seconds"] / 60.0, "ms": onnx_latency_ms(report.path),
           "runtime": "ONNX Runtime", "epochs": metadata.training.get("epochs_run", config.epochs),
           "steps": metadata.training.get("optimiser_steps"),
           "size": str(metadata.image_size), "change": args.label,
           "threshold_rule": report.metadata.calibration.rule}
    last_step = run_dir / LAST_STEP_DIR
    if config.weight_average and (last_step / "checkpoint.pt").exists():  # the same training's last step
        exported = export_onnx(last_step, progress=not args.quiet, graph_overrides=head_options(config))
        last = evaluate_model(exported.path, spec, category)
        row["last_step"] = {k: last[k] for k in ("image_auroc", "pixel_auroc", "aupro", "f1")}
    if action == "reuse":  # the same training: its timing note (minutes measured while sharing the cores) holds
        note = stored_row(Path(args.out).with_suffix(".json"), row).get("timing_note")
        row.update({"timing_note": note} if note else {})
    return row


def stored_row(store: Path, row: dict[str, Any]) -> dict[str, Any]:
    """The row of ``store`` (a table's JSON rows) with ``row``'s :data:`ROW_KEY`, or ``{}``."""
    rows = json.loads(store.read_text()) if store.exists() else []
    return next((r for r in rows if all(r.get(k) == row.get(k) for k in ROW_KEY)), {})


def training_action(run_dir: Path, *, reuse: bool, resume: bool) -> str:
    """What a row does with its run folder: ``"reuse"`` its checkpoint (``--reuse`` and one is there),
    ``"resume"`` its interrupted training (``--resume`` and a training state is there), else ``"train"`` afresh
    (which refuses to overwrite an interrupted run: :class:`train.resume.ResumeError`)."""
    from train.resume import state_path

    if reuse and (run_dir / "checkpoint.pt").exists():
        return "reuse"
    if resume and state_path(run_dir).exists():
        return "resume"
    return "train"


def stale_settings(recorded: dict[str, Any], config: TrainConfig) -> list[str]:
    """The trained settings in which a checkpoint's training record differs from a row's settings, each as
    ``"bn_freeze: 0.0 in the checkpoint, 0.1 in the row"``. A setting the record predates counts as the value runs
    had before it existed (:data:`train.resume.SETTINGS_ADDED`); :data:`NOT_COMPARED_ON_REUSE` are not compared."""
    from dataclasses import asdict

    from train.resume import SETTINGS_ADDED

    found = {**SETTINGS_ADDED, **recorded}
    return [f"{key}: {found.get(key)!r} in the checkpoint, {wanted!r} in the row"
            for key, wanted in asdict(config).items()
            if key not in NOT_COMPARED_ON_REUSE and found.get(key) != wanted]


def row_config(spec: str, category: str | None, run_dir: Path, method: str,
               args: argparse.Namespace) -> TrainConfig:
    """The training settings of one row: the recipe, ``--epochs`` if given, then the row's ``--change`` settings
    (``--change epochs=30`` wins over ``--epochs``) and ``--method-option`` options."""
    settings = {"epochs": args.epochs, **args.change}
    return TrainConfig(data=spec, category=category, out=str(run_dir), method=method, seed=args.seed,
                       method_options=args.method_options, **settings)


def run_folder(runs: Path, name: str, method: str, changes: dict[str, Any],
               method_options: dict[str, Any], seed: int = RECIPE_SEED) -> Path:
    """Where one set x method x change trains: the recipe's folder for head-only changes (export-time settings,
    the recipe's checkpoint re-exported), a folder named after the change otherwise (a seed other than the
    recipe's is a change too), so that an ablation never overwrites the recipe's checkpoint."""
    folder = runs / name.replace(":", "-") / method
    trained = {k: v for k, v in changes.items() if k not in HEAD_SETTINGS}
    trained.update({f"method.{k}": v for k, v in method_options.items()})
    trained.update({"seed": seed} if seed != RECIPE_SEED else {})
    if not trained:
        return folder
    suffix = "-".join(f"{k}={v}" for k, v in sorted(trained.items()))
    return folder.with_name(f"{method}-{''.join(c if c.isalnum() or c in '.=-' else '_' for c in suffix)}")


def run_baseline(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fit the nearest-neighbour baseline on the set's training split and evaluate it on the test set."""
    import numpy as np

    from sdk.datasets import load_dataset, load_prepared
    from sdk.evaluate import evaluate_detector
    from train.trainer import resolve_image_size

    from .patchcore import PatchNearestNeighbour

    spec, category = dataset_spec(name)
    defaults = TrainConfig(data=spec, out="", **args.change)
    dataset = load_dataset(spec, category, validation_fraction=defaults.validation_fraction, seed=args.seed)
    size = resolve_image_size(defaults.image_size, dataset.train)  # the RD runs' size (auto: the parts' aspect)
    baseline = PatchNearestNeighbour(defaults.backbone, size, seed=args.seed)
    started = time.perf_counter()
    baseline.fit(load_prepared(dataset.train, baseline.image_size, progress=False),
                 load_prepared(dataset.validation, baseline.image_size, progress=False))
    fit_minutes = (time.perf_counter() - started) / 60.0
    metrics = evaluate_detector(baseline, dataset.test, progress=not args.quiet)
    image = np.full((*baseline.image_size, 3), 128, dtype=np.uint8)
    ms = summarize(time_calls(lambda: baseline.predict_batch([image], rgb=True), 2, 10), 1)["median_ms"]
    return {"set": name, "method": f"{BASELINE} (patch NN)", **{k: metrics[k] for k in METRICS},
            "train_minutes": fit_minutes, "ms": ms, "runtime": "PyTorch", "epochs": None,
            "bank": int(baseline.bank.shape[0]), "size": str(size),
            "change": args.label, "threshold_rule": baseline.calibration.rule}


def parse_changes(items: list[str]) -> dict[str, Any]:
    """``--change KEY=VALUE`` items → TrainConfig keyword arguments (numbers and booleans converted).

    Raises:
        SystemExit: A key TrainConfig does not have.
    """
    from dataclasses import fields

    try:
        changes = parse_key_values(items, "--change")
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    known = {f.name for f in fields(TrainConfig)} - {"data", "out", "category", "method", "seed"}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise SystemExit(f"--change: unknown setting(s) {unknown}; valid: {sorted(known)}")
    return changes


def run_one(name: str, method: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row: an RD method or the baseline on one set."""
    return [run_baseline(name, args) if method == BASELINE else run_method(name, method, args)]


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    defaults = TrainConfig(data="", out="")
    length = f"{args.epochs} epochs" if args.epochs else f"{DEFAULT_STEPS} optimiser steps (the fewest whole epochs)"
    lines = [
        "# Accuracy over every public set",
        "",
        f"{datetime.date.today().isoformat()}; default recipe: {defaults.backbone}, input size {defaults.image_size}, "
        f"{length}, the last {defaults.bn_freeze:.0%} of them on the student's running batch-norm statistics "
        f"(`bn_freeze`), batch {defaults.batch_size}, {defaults.lr_schedule} learning rate, seed {RECIPE_SEED}, "
        f"head: strides {'+'.join(map(str, defaults.map_strides))}, image score {defaults.image_score} "
        f"({defaults.top_fraction:.1%} of the map), blur σ {defaults.map_sigma:g} px; "
        f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU. RD rows: metrics from the exported ONNX through "
        "`sdk.Detector`. Baseline: patch nearest-neighbour on the same teacher's stride-8/16 features "
        "(`benchmarks/patchcore.py`), same upsampling and blur, maximum as image score. Thresholds (F1) from "
        "held-out good training images; "
        "nothing chosen on test images. ms: batch 1, median.",
        "",
        "The head (strides, image score) was chosen in [`scores.md`](scores.md) on held-out good training images "
        "with synthetic defects; KolektorSDD at a square 256 is in [`nonsquare.md`](nonsquare.md).",
        "",
        "Reproduce: `python -m benchmarks.accuracy` (all; rows are kept in `accuracy.json` and a rerun of one set, "
        "method or `--change` replaces only its rows).",
        "",
        "| set | method | change | size | training | image AUROC | pixel AUROC | AUPRO | F1 | train (fit) min | "
        "ms (b1) | runtime |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in table_order(rows):
        lines.append(f"| {r['set']} | {r['method']} | {r.get('change', 'recipe')} | {r.get('size', '')} | "
                     f"{training_length(r)} | {f(r['image_auroc'])} | {f(r['pixel_auroc'])} | {f(r['aupro'])} | "
                     f"{f(r['f1'])}{OLD_RULE_MARK if r.get('threshold_rule') != MEDIAN_MAD else ''} | "
                     f"{r['train_minutes']:.1f} | {r['ms']:.1f} | {r['runtime']} |")
    lines += ["", "ELPV has image-level labels only: pixel AUROC and AUPRO are n/a. Rows with a change: the recipe "
              "with that one setting changed (head settings re-export the recipe's checkpoint; others retrain).",
              f"F1 at the calibrated threshold: median + 3 robust std of the held-out good images' scores; F1 marked "
              f"{OLD_RULE_MARK.strip()} is at mean + 3 std, the rule before metadata schema 4 (not re-measured yet: "
              "`--reuse` re-exports a run and measures it again without retraining)."]
    missing = [f"{name} x {method}" for name in SETS for method in METHODS
               if not any(r["set"] == name and r["method"] == method and r.get("change", "recipe") == "recipe"
                          for r in rows)]
    if missing:
        lines.append(f"Not run yet with the recipe: {', '.join(missing)}.")
    lines += seed_spread(rows)
    notes = [f"- {r['set']} / {r['method']} / {r.get('change', 'recipe')}: {row_note(r)}"
             for r in table_order(rows) if row_note(r)]
    if notes:
        lines += ["", "Notes on rows (timings, and the row each compares with where it was measured on another "
                  "processor):", *notes]
    return "\n".join([*lines, ""])


def row_note(row: dict[str, Any]) -> str:
    """A row's note: its ``timing_note``, then, for a run that exported a weight average, the metrics of the same
    training's last step's weights (``RUN/last_step``, the row to compare with); ``""`` when it has neither."""
    parts = [row["timing_note"]] if row.get("timing_note") else []
    if row.get("last_step"):
        last = row["last_step"]
        values = " / ".join("n/a" if last.get(k) is None else f"{last[k]:.3f}"
                            for k in ("image_auroc", "pixel_auroc", "aupro", "f1"))
        parts.append(f"the last step's weights of this same training (`RUN/last_step`, calibrated alike) measured "
                     f"image / pixel AUROC / AUPRO / F1 {values}")
    return "; ".join(parts)


def split_seed(change: str) -> tuple[str, int]:
    """A row's change label → (the label without its seed, the seed): ``"seed=2"`` → ``("recipe", 2)``,
    ``"backbone=x, seed=2"`` → ``("backbone=x", 2)``; a label with no seed is of the recipe's seed."""
    match = re.search(r"(?:^|, )seed=(-?\d+)$", change)
    if not match:
        return change, RECIPE_SEED
    return change[: match.start()] or "recipe", int(match.group(1))


def seed_spread(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: for each set x method x change trained with more than one seed, the image and pixel AUROC of
    each seed, their mean and range (max - min); no lines when no row has another seed."""
    groups: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}  # in the table's order of first rows
    for row in table_order(rows):
        change, seed = split_seed(row.get("change", "recipe"))
        groups.setdefault((row["set"], row["method"], change), {})[seed] = row
    spread = {key: by_seed for key, by_seed in groups.items() if len(by_seed) > 1}
    if not spread:
        return []

    def values(by_seed: dict[int, dict[str, Any]], metric: str) -> list[float]:
        return [by_seed[seed][metric] for seed in sorted(by_seed) if by_seed[seed][metric] is not None]

    def summary(numbers: list[float]) -> str:
        if not numbers:
            return "n/a | n/a"
        return f"{sum(numbers) / len(numbers):.3f} | {max(numbers) - min(numbers):.3f}"

    lines = ["", "Seed spread (the same set, method and change trained with other seeds, `--seed N`; each seed also "
             "draws its own validation split and, for the baseline, its own coreset):", "",
             "| set | method | change | seeds | image AUROC per seed | image mean | image range | pixel mean | "
             "pixel range |", "|---|---|---|---|---|---:|---:|---:|---:|"]
    for (name, method, change), by_seed in spread.items():
        per_seed = " / ".join(f"{by_seed[seed]['image_auroc']:.3f}" for seed in sorted(by_seed))
        lines.append(f"| {name} | {method} | {change} | {', '.join(map(str, sorted(by_seed)))} | {per_seed} | "
                     f"{summary(values(by_seed, 'image_auroc'))} | {summary(values(by_seed, 'pixel_auroc'))} |")
    return lines


def training_length(row: dict[str, Any]) -> str:
    """``63 ep / 1008 steps``, ``30 ep`` (rows without a step count), or ``-`` (the baseline)."""
    if not row.get("epochs"):
        return "-"
    return f"{row['epochs']} ep" + (f" / {row['steps']} steps" if row.get("steps") else "")


def table_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by set, the recipe rows (methods, then the baseline) before the ablations of that set."""
    def rank(row: dict[str, Any]) -> tuple[int, int, str, int]:
        method = row["method"].split(" ")[0]
        order = [*METHODS, BASELINE]
        return (SETS.index(row["set"]) if row["set"] in SETS else len(SETS), row.get("change", "recipe") != "recipe",
                row.get("change", "recipe"), order.index(method) if method in order else len(order))
    return sorted(rows, key=rank)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS, help="sets (default: all four)")
    parser.add_argument("--methods", nargs="+", default=[*METHODS, BASELINE], choices=[*METHODS, BASELINE],
                        help="methods (default: the four and the baseline)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epochs instead of the recipe's length ({DEFAULT_STEPS} optimiser steps)")
    parser.add_argument("--seed", type=int, default=RECIPE_SEED,
                        help=f"seed of initialisation, data order, validation split and the baseline's coreset "
                             f"(default: {RECIPE_SEED}, the recipe's; rows of another seed are labelled seed=N and "
                             "summarised in the table's seed-spread section)")
    parser.add_argument("--runs", default="runs/accuracy", help="folder for the runs (default: runs/accuracy)")
    parser.add_argument("--reuse", action="store_true", help="reuse existing checkpoints instead of retraining")
    parser.add_argument("--resume", action="store_true",
                        help="continue a row's interrupted training (its run folder's train_state.pt) instead of "
                             "refusing to start over it; rows with no interrupted training start afresh")
    parser.add_argument("--out", default=str(RESULTS_DIR / "accuracy.md"), help="markdown output")
    parser.add_argument("--change", action="append", default=[], metavar="KEY=VALUE",
                        help="an ablation: a TrainConfig setting changed from the recipe (e.g. image_size=256, "
                             "steps=1000, backbone=efficientnet_lite1, image_score=top_mean); repeatable")
    parser.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an ablation of a method option (e.g. segmentation_target=difference for drd, "
                             "noise_std=0.03 for reason); repeatable")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    args.change = parse_changes(args.change)
    try:
        args.method_options = parse_key_values(args.method_option, "--method-option")
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    labels = [f"{k}={v}" for k, v in args.change.items()] + [f"{k}={v}" for k, v in args.method_options.items()]
    labels += [f"seed={args.seed}"] if args.seed != RECIPE_SEED else []
    args.label = ", ".join(labels) or "recipe"
    jobs = [functools.partial(run_one, name, method, args) for name in args.sets for method in args.methods]
    collect_rows(jobs, functools.partial(markdown, args=args), args.out, store=Path(args.out).with_suffix(".json"),
                 key=ROW_KEY)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
