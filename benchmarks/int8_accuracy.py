"""INT8 against FP32 on every trained model of the accuracy table: test AUROC of both, and which layers stayed FP32.

For each run folder under ``runs/accuracy/SET/METHOD[-change]`` (the models ``python -m benchmarks.accuracy``
trained) and each extra ``--run``: export INT8 with the default export (one calibration on good training images, a
per-layer sensitivity sweep, the gate on held-out good images with synthetic defects: :mod:`export.int8_layers`), with
the same head as the run's FP32 ``model.onnx``; then evaluate the FP32 and the INT8 file through ``sdk.Detector`` on
the run's test set, the INT8 file in ONNX Runtime and in OpenVINO (the same file; OpenVINO pinned to f32 where it does
not run INT8). Test images only measure; nothing here chooses anything.

Writes ``benchmarks/results/int8_accuracy.md`` (rows kept in ``int8_accuracy.json``: a rerun of one run replaces only
its row). Run: ``python -m benchmarks.int8_accuracy [--sets ...] [--run RUN_DIR ...]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from export.int8_layers import MAX_GOOD_SCORE_NOISE
from sdk.evaluate import ScoredTestSet

from .accuracy import SETS
from .latency import RESULTS_DIR, collect_rows

MAX_DROP = 0.005
"""The issue's bound on every INT8 AUROC drop against FP32."""
METRICS = ("image_auroc", "pixel_auroc")
SELECTION_KEYS = ("image_auroc", "image_auroc_fp32", "pixel_auroc", "pixel_auroc_fp32", "score_rank_correlation",
                  "good_score_noise", "passed")
"""What a row keeps of the export's gate on the selection set (``int8_fp32_layers.gate`` in the model's checks)."""
ROBUST_NOISE = {"good_score_noise_scale": "robust_spread"}
"""Marks a row whose good-score noise is over the good scores' robust spread (``export.int8_layers.robust_spread``,
the gate since 2026-11-30); older rows hold it over their plain standard deviation."""


def run_folders(runs: Path, sets: list[str]) -> list[Path]:
    """Every trained run of the accuracy table for ``sets`` (folders holding ``checkpoint.pt``), sorted."""
    folders = []
    for name in sets:
        folders += sorted(p.parent for p in (runs / name.replace(":", "-")).glob("*/checkpoint.pt"))
    return folders


def describe(run_dir: Path, runs: Path, method: str, dataset: str) -> dict[str, str]:
    """Set, method and change of a run: from the accuracy table's naming (``RUNS/SET/METHOD[-change]``) for its
    runs; the model's own dataset and method, and the folder's name as the change, for any other run."""
    if run_dir.parent.parent.resolve() == runs.resolve():
        method, _, change = run_dir.name.partition("-")
        return {"run": str(run_dir), "set": run_dir.parent.name.replace("elpv-mono", "elpv:mono"), "method": method,
                "change": change or "recipe"}
    return {"run": str(run_dir), "set": dataset, "method": method, "change": run_dir.name}


def score(path: Path, backend: str) -> ScoredTestSet:
    """One model file's outputs on its run's test set, through ``sdk.Detector``."""
    from sdk import Detector
    from sdk.datasets import load_model_dataset
    from sdk.evaluate import score_test_set

    with Detector(path, backend=backend) as detector:
        dataset = load_model_dataset(detector.metadata, model_path=path)
        return score_test_set(detector, dataset.test, progress=False)


def measure_on_test(fp32: Path, int8: Path, backends: list[str]) -> dict[str, Any]:
    """Test image and pixel AUROC of the FP32 file (ONNX Runtime) and of the INT8 file in each runtime, and how far
    INT8 moves the good test images' scores (:func:`good_noise_on_test`). Test images measure only."""
    reference = score(fp32, "onnxruntime")
    row: dict[str, Any] = {"fp32": auroc(reference), "test_good_noise": {}}
    for backend in backends:
        scored = score(int8, backend)
        row["int8" if backend == "onnxruntime" else f"int8_{backend}"] = auroc(scored)
        row["test_good_noise"][backend] = good_noise_on_test(scored, reference)
    return row


def auroc(scored: ScoredTestSet) -> dict[str, Any]:
    """The table's metrics of one scored test set."""
    metrics = scored.metrics()
    return {k: metrics[k] for k in METRICS}


def good_noise_on_test(scored: ScoredTestSet, reference: ScoredTestSet) -> float:
    """INT8's noise on the good *test* images' scores, in the gate's unit (:func:`export.int8_layers.good_score_noise`:
    the standard deviation of each good image's change over the robust spread of the FP32 good scores): what the
    gate estimated on held-out good training images, measured where it counts."""
    from export.int8_layers import Outputs, good_score_noise

    empty = np.empty(0, np.float32)
    return good_score_noise(Outputs(empty, scored.scores), Outputs(empty, reference.scores), reference.labels)


def run_row(run_dir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Export one run to INT8 and evaluate FP32 and INT8 (ONNX Runtime, and OpenVINO where installed)."""
    from export.onnx import export_onnx
    from sdk import Detector

    fp32 = run_dir / "model.onnx"
    if not fp32.exists():
        export_onnx(run_dir, progress=not args.quiet)
    options = Detector(fp32).metadata.graph_options  # the head the FP32 row was measured with
    report = export_onnx(run_dir, precision="int8", calib_images=args.calib_images, graph_overrides=options,
                         progress=not args.quiet)
    layers = report.checks["int8_fp32_layers"]
    training = report.metadata.training
    dataset = str(training.get("category") or training.get("dataset") or training.get("data"))
    row: dict[str, Any] = {
        **describe(run_dir, Path(args.runs), report.metadata.method, dataset),
        "size": str(report.metadata.image_size),
        "n_fp32": layers["n_fp32"], "n_int8": layers["n_int8"], "fp32_layers": layers["fp32_layers"],
        "fp32_layer_weights": layers.get("fp32_layer_weights", "fp32"),
        "weight_attempts": weight_attempts(layers),
        **selection_fields(layers.get("gates", {"onnxruntime": layers["gate"]})), **ROBUST_NOISE,
        "export_seconds": sum(report.checks["export_seconds"].values()),
        "mb": {"fp32": fp32.stat().st_size / 1e6, "int8": report.path.stat().st_size / 1e6},
    }
    return [{**row, **measure_on_test(fp32, report.path, runtimes(args.backends))}]


def runtimes(backends: list[str]) -> list[str]:
    """The asked runtimes that are installed (OpenVINO is an extra): those the export gates in."""
    from export.int8_layers import gate_runtimes

    installed = gate_runtimes()
    return [b for b in backends if b in installed]


def remeasure_row(row: dict[str, Any], backends: list[str]) -> list[dict[str, Any]]:
    """A stored row's written FP32 and INT8 files measured on the test set again, without exporting (fills in the
    test good-score noise of rows measured before it existed); a row whose files or test set are gone is kept as it
    is."""
    from sdk.errors import DatasetError

    run_dir = Path(row["run"])
    fp32, int8 = run_dir / "model.onnx", run_dir / "model_int8.onnx"
    if not (fp32.exists() and int8.exists()):
        return [row]
    try:
        return [{**row, **measure_on_test(fp32, int8, runtimes(backends))}]
    except DatasetError as exc:
        print(f"{run_dir}: kept as stored ({exc})", flush=True)
        return [row]


def selection_fields(gates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A row's record of the gate: ``selection`` (ONNX Runtime's, the reference) and ``selection_openvino`` where
    the export gated in OpenVINO too (:func:`export.int8_layers.gate_runtimes`)."""
    fields = {"selection": {k: gates["onnxruntime"][k] for k in SELECTION_KEYS}}
    if "openvino" in gates:
        fields["selection_openvino"] = {k: gates["openvino"][k] for k in SELECTION_KEYS}
    return fields


def regate_row(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The current gate (:func:`export.int8_layers.gate`) on a stored row's written FP32 and INT8 files, without
    exporting again: what a row exported before a gate criterion existed measures under it now (the selection set is
    rebuilt exactly as the export builds it). Test images are not read."""
    import onnx

    from export.int8_layers import RUNNERS, gate, gate_runtimes, run_on_cpu
    from sdk import Detector
    from sdk.datasets import load_model_dataset, load_prepared
    from train.selection import SelectionSet

    run_dir = Path(row["run"])
    metadata = Detector(run_dir / "model_int8.onnx").metadata
    dataset = load_model_dataset(metadata, model_path=run_dir / "model_int8.onnx")
    selection = SelectionSet.from_good(load_prepared(dataset.validation, metadata.image_size, progress=False),
                                       metadata.training.get("seed", 0))
    int8, reference = onnx.load(run_dir / "model_int8.onnx"), run_on_cpu(onnx.load(run_dir / "model.onnx"),
                                                                          selection.images)
    gates = {runtime: gate(RUNNERS[runtime](int8, selection.images), reference, selection)
             for runtime in gate_runtimes()}
    return [{**row, **selection_fields({runtime: result.as_record() for runtime, result in gates.items()}),
             "regated": True, **ROBUST_NOISE}]


def table_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recipe's rows first, by set and method; every other row after them, in the order it was measured."""
    def key(row: dict[str, Any]) -> tuple[int, int, str]:
        if row["change"] != "recipe":
            return (1, 0, "")
        return (0, SETS.index(row["set"]) if row["set"] in SETS else len(SETS), row["method"])

    return sorted(rows, key=key)  # stable: the other rows keep their order


def drop(row: dict[str, Any], key: str, metric: str) -> float | None:
    """FP32 minus INT8 (positive: INT8 is worse); None where the metric is undefined (no masks)."""
    if key not in row or row["fp32"][metric] is None:
        return None
    return row["fp32"][metric] - row[key][metric]


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def f(v: float | None, sign: bool = False) -> str:
        return "n/a" if v is None else f"{v:+.3f}" if sign else f"{v:.3f}"

    def worst(of: list[dict[str, Any]]) -> float | None:
        drops = [d for r in of for key in ("int8", "int8_openvino") for m in METRICS
                 if (d := drop(r, key, m)) is not None]
        return max(drops) if drops else None

    rows = table_order(rows)
    recipe = [r for r in rows if r["change"] == "recipe"]
    lines = [
        "# INT8 against FP32 on every trained model",
        "",
        f"{datetime.date.today().isoformat()}; {platform.machine()} CPU, no GPU. Models: the runs of "
        "`python -m benchmarks.accuracy` (seed 0) and any extra run. INT8: `rdedge export RUN --precision int8` "
        f"as shipped ({args.calib_images} good training images calibrated once; a per-layer sensitivity sweep and "
        "a gate on held-out good images with synthetic defects decide which layers stay FP32, "
        "`export.int8_layers`); the head is the FP32 row's. Test AUROC through `sdk.Detector`: ONNX Runtime "
        "(INT8 with its integer kernels) and OpenVINO (the same INT8 file). Test images measure only.",
        "",
        f"Largest AUROC drop, INT8 against FP32, in either runtime: **{f(worst(recipe), True)}** over the "
        f"{len(recipe)} models of today's recipe (the first rows), {f(worst(rows), True)} over every row "
        f"(bound {MAX_DROP}). A change that names `bn_freeze=0` is a model of the recipe before 2026-12-07, when "
        "training's last tenth on the running batch-norm statistics became the default (`rdedge train --bn-freeze`); "
        "`int8_max_noise=R` is the recipe's model exported with a stricter gate, `rdedge export RUN --precision int8 "
        "--int8-max-noise R`.",
        "",
        "Reproduce: `python -m benchmarks.int8_accuracy` (all runs; `--sets`, `--run RUN_DIR`).",
        "",
        "| set | method | change | size | FP32 image / pixel | INT8 ORT image / pixel | Δ ORT | INT8 OpenVINO "
        "image / pixel | Δ OpenVINO | layers INT8 / FP32 | gate: selection image AUROC FP32 → INT8 | good-score "
        "noise ORT / OpenVINO | test good-score noise ORT / OpenVINO | export s | MB FP32 → INT8 |",
        "|---|---|---|---|---|---|---|---|---|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        ov = r.get("int8_openvino")
        sel = r["selection"]
        lines.append(
            f"| {r['set']} | {r['method']} | {r['change']} | {r['size']} | "
            f"{f(r['fp32']['image_auroc'])} / {f(r['fp32']['pixel_auroc'])} | "
            f"{f(r['int8']['image_auroc'])} / {f(r['int8']['pixel_auroc'])} | "
            f"{f(drop(r, 'int8', 'image_auroc'), True)} / {f(drop(r, 'int8', 'pixel_auroc'), True)} | "
            + (f"{f(ov['image_auroc'])} / {f(ov['pixel_auroc'])} | {f(drop(r, 'int8_openvino', 'image_auroc'), True)}"
               f" / {f(drop(r, 'int8_openvino', 'pixel_auroc'), True)} | " if ov else "- | - | ")
            + f"{r['n_int8']} / {r['n_fp32']}{weights_mark(r)} | "
            f"{sel['image_auroc_fp32']:.3f} → {sel['image_auroc']:.3f} | "
            f"{noise_cell(r)} | {noise_on_test_cell(r)} | {r['export_seconds']:.0f} | "
            f"{r['mb']['fp32']:.1f} → {r['mb']['int8']:.1f} |")
    lines += ["", "Δ: FP32 minus INT8 (positive: INT8 lost that much). Good-score noise: how far INT8 moves the "
              "held-out good images' scores, in units of their robust spread, 1.4826 MAD (the gate accepts at most "
              f"{MAX_GOOD_SCORE_NOISE}, a bound fixed a priori from the 0.005 target: "
              "`export.int8_layers.MAX_GOOD_SCORE_NOISE`; ✗: above it), in ONNX Runtime, then in OpenVINO where the "
              "export gated the file there too (since 2026-11-30, when OpenVINO is installed; a single value: "
              "ONNX Runtime only). Test good-score noise: the same measure on the good *test* images (measured "
              "there, never used to choose): where it is well above the gate's, production's good parts score "
              "unlike the held-out ones and the gate's bound does not carry over (`rdedge export --int8-max-noise`). "
              "A value marked * was measured with "
              "`--regate` on files exported before that criterion existed: where it is within the bound, the export "
              "chooses the same layers today (the gate only became stricter: every split that failed still fails). "
              "A value marked ‡ is over the good scores' plain standard deviation, the gate's unit until "
              "2026-11-30, which a few odd good images inflate (KolektorSDD DRD: 0.114 against 0.935 over the "
              "robust spread); those runs' files are not kept to re-measure, and today's export may keep more of "
              "their layers FP32. (FP16 weights): the FP32 layers' weights are stored in FP16, each cast to FP32 "
              "(since 2026-12-01 the export gates the chosen split again with FP16 weights and writes that file if "
              "it passes too; `export.int8_layers.SMALLER_WEIGHTS`).",
              "", "Layers kept FP32, most sensitive first:", ""]
    for r in rows:
        if r["fp32_layers"]:
            names = ", ".join(f"`{n}`" for n in r["fp32_layers"])
            lines.append(f"- {r['set']} / {r['method']} / {r['change']}: {names}")
    if not any(r["fp32_layers"] for r in rows):
        lines.append("- none: every model passed the gate with its whole network in INT8.")
    return "\n".join(lines) + "\n"


def weight_attempts(layers: dict[str, Any]) -> list[dict[str, Any]]:
    """The gate runs of the chosen split with each weight format it tried (FP32, then the smaller ones): passed and
    the good-score noise in each runtime."""
    return [{"weights": t.get("weights", "fp32"), "passed": t["passed"],
             "good_score_noise": {runtime: g["good_score_noise"] for runtime, g in t.get("gates", {}).items()}}
            for t in layers.get("tried", []) if t["n_fp32"] == layers["n_fp32"]]


def weights_mark(row: dict[str, Any]) -> str:
    """Where the row's FP32 layers store smaller weights (``keep_fp32``'s ``weights``): `` (FP16 weights)`` or
    `` (INT8 weights)``; else nothing."""
    weights = row.get("fp32_layer_weights", "fp32")
    return f" ({weights.upper()} weights)" if weights != "fp32" and row["n_fp32"] else ""


def noise_on_test_cell(row: dict[str, Any]) -> str:
    """INT8's noise on the good test images' scores, ONNX Runtime then OpenVINO (``-`` for rows measured before)."""
    noises = row.get("test_good_noise")
    return " / ".join(f"{noises[b]:.3f}" for b in ("onnxruntime", "openvino") if b in noises) if noises else "-"


def noise_cell(row: dict[str, Any]) -> str:
    """ONNX Runtime's good-score noise, then OpenVINO's where the row has it, with the marks the table explains."""
    noises = [row[key].get("good_score_noise") for key in ("selection", "selection_openvino") if key in row]
    if noises[0] is None:
        return "-"
    robust = row.get("good_score_noise_scale") == ROBUST_NOISE["good_score_noise_scale"]
    return (" / ".join(f"{noise:.3f}" for noise in noises) + ("*" if row.get("regated") else "")
            + ("" if robust else "‡") + (" ✗" if max(noises) > MAX_GOOD_SCORE_NOISE else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS, help="sets (default: all four)")
    parser.add_argument("--runs", default="runs/accuracy", help="folder of the accuracy runs (default: %(default)s)")
    parser.add_argument("--run", action="append", default=[], metavar="RUN_DIR",
                        help="a further trained run folder (repeatable)")
    parser.add_argument("--only-extra", action="store_true", help="only the --run folders")
    parser.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino"],
                        choices=["onnxruntime", "openvino"], help="runtimes of the INT8 file (default: both)")
    parser.add_argument("--calib-images", type=int, default=256, help="calibration images (default: 256)")
    parser.add_argument("--out", default=str(RESULTS_DIR / "int8_accuracy.md"), help="markdown output")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--remeasure", action="store_true",
                        help="measure the stored rows' written files on the test set again instead of exporting "
                             "(fills in the test good-score noise; rows whose files are gone are kept as they are)")
    parser.add_argument("--regate", action="store_true",
                        help="measure the stored rows' written files with the current gate instead of exporting "
                             "(fills in criteria added since; rows whose files fail it are listed)")
    args = parser.parse_args(argv)
    store = Path(args.out).with_suffix(".json")
    if args.regate:
        stored = json.loads(store.read_text()) if store.exists() else []
        collect_rows([lambda r=r: regate_row(r) for r in stored], lambda rows: markdown(rows, args), args.out,
                     store=store, key=("run",))
        return 0
    if args.remeasure:
        stored = json.loads(store.read_text()) if store.exists() else []
        collect_rows([lambda r=r: remeasure_row(r, args.backends) for r in stored], lambda rows: markdown(rows, args),
                     args.out, store=store, key=("run",))
        return 0
    folders = [] if args.only_extra else run_folders(Path(args.runs), args.sets)
    folders += [Path(p) for p in args.run]
    if not folders:
        parser.error(f"no trained runs under {args.runs} for {args.sets}: run `python -m benchmarks.accuracy` first")
    collect_rows([lambda d=d: run_row(d, args) for d in folders], lambda rows: markdown(rows, args), args.out,
                 store=store, key=("run",))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
