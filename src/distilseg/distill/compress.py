"""``distilseg compress``: teacher -> baseline student -> KD student -> INT8, evaluated and benchmarked.

Why one command: the question a user asks is "how much accuracy do I keep for how much speed?"; answering it
needs the same dataset, schedule and measurement for every model. Stages write into ``OUT/<stage>`` and are
recorded in ``OUT/stages.json`` when they finish; a re-run skips every finished stage whose output is still
there, and a training stage that was interrupted resumes from its ``checkpoints/last.ckpt``. So an
interrupted ``compress`` continues where it stopped.

Layout: ``teacher/``, ``student/`` (baseline, no KD), ``kd_student/`` (training outputs with ``best/``),
``export/kd_student_int8.onnx`` (+ fp32 ONNX), ``eval/<row>.json``, ``bench/<row>.json``, ``compress.json``,
``report.md``, ``report.html``, ``pareto.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError
from ..io import atomic_write_json

__all__ = ["PRESETS", "add_compress_parser", "run_compress", "Compressor"]

ROWS = (  # (name, label)
    ("teacher", "teacher"),
    ("student", "student"),
    ("kd_student", "KD student"),
    ("int8_kd_student", "INT8 KD student"),
)

from .compress_settings import (  # noqa: F401 - re-exported: presets, flags and settings live there
    PRESET_DIR, PRESETS, build_compress_parser, check_models, load_preset, settings_from_args,
)


def add_compress_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = build_compress_parser(subparsers)
    p.set_defaults(func=run_compress)
    return p


class Compressor:
    """Runs the stages; each is skipped when ``stages.json`` records it and its output still exists."""

    def __init__(self, out: Path, settings: dict[str, Any], log: Callable[[str], None] | None = None) -> None:
        self.out = Path(out)
        self.s = settings
        self.log = log or (lambda msg: print(msg, flush=True))
        self.state_path = self.out / "stages.json"
        self.state: dict[str, Any] = {}
        if self.state_path.is_file():
            try:
                self.state = json.loads(self.state_path.read_text())
            except json.JSONDecodeError:
                self.state = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.num_classes: int | None = None
        self.estimates: dict[str, dict[str, Any]] = {}
        self._check_settings()

    # Settings that change what a stage produces; a re-run with other values must not reuse old outputs.
    FINGERPRINT_KEYS = ("dataset", "root", "dataset_args", "teacher", "teacher_model", "teacher_args",
                        "student_model", "student_args", "img_size", "epochs", "teacher_epochs", "batch_size",
                        "lr", "scheduler", "augment", "kd", "hard_weight", "seed", "precision", "train",
                        "teacher_train", "use", "time_budget", "teacher_view")

    def _check_settings(self) -> None:
        current = json.loads(json.dumps({k: self.s.get(k) for k in self.FINGERPRINT_KEYS}, default=str))
        saved = self.state.get("_settings")
        if saved is not None and saved != current:
            diff = [k for k in self.FINGERPRINT_KEYS if saved.get(k) != current.get(k)]
            raise UsageError(
                f"{self.out} holds a compress run made with other settings ({', '.join(diff)} differ, see "
                f"{self.state_path}); choose another --out to start anew, or repeat the original flags to continue"
            )
        self.state["_settings"] = current

    # -- stage bookkeeping --------------------------------------------------------------------------
    def _stage(self, name: str, outputs: list[Path], fn: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
        rec = self.state.get(name)
        if isinstance(rec, dict) and rec.get("done") and all(p.exists() for p in outputs):
            self.log(f"[compress] {name}: done already ({outputs[0]}), skipped")
            self.skipped.append(name)
            return rec
        estimate = self.estimates.get(name)
        self.log(f"[compress] {name}: running" + (f" (estimated {estimate['seconds'] / 60:.1f} min)" if estimate else ""))
        t0 = time.perf_counter()
        info = fn() or {}
        rec = {"done": True, "seconds": round(time.perf_counter() - t0, 2), **info}
        self.state[name] = rec
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.state_path, self.state)
        self.ran.append(name)
        self.log(f"[compress] {name}: finished in {rec['seconds']:.1f} s")
        return rec

    # -- training -----------------------------------------------------------------------------------
    def _train_cfg(self, model: str, model_args: dict[str, Any], out: Path, epochs: int, role: str = "student",
                   distill: dict[str, Any] | None = None):
        """The stage's training configuration, built directly (``training.config``) and validated there: the
        preset's keys, then its ``train`` section (every stage), then ``teacher_train`` (the teacher only); with
        ``distill`` (the KD stage's teacher, kd, ...) a ``DistillConfig``: its config.yaml records them."""
        from ..training.config import TrainConfig
        from .api import DistillConfig

        s = self.s
        sections = {**dict(s.get("train") or {}), **(dict(s.get("teacher_train") or {}) if role == "teacher" else {})}
        minutes = (s.get("time_budget") or {}).get(out.name) or None  # the stage's share of the time
        return (DistillConfig if distill else TrainConfig).from_dict({**dict(
            dataset=s["dataset"], root=str(s["root"]) if s["root"] else None, dataset_args=dict(s["dataset_args"]),
            model=model, model_args=dict(model_args), out=str(out), img_size=list(s["img_size"]), epochs=int(epochs),
            batch_size=int(s["batch_size"]), lr=float(s["lr"]), scheduler=s["scheduler"], precision=s["precision"],
            accelerator=s["accelerator"], num_workers=int(s["num_workers"]), seed=int(s["seed"]),
            augment=bool(s["augment"]), progress=bool(s.get("progress", False)), time_budget=minutes,
        ), **sections, **(distill or {}), "resume": True})

    @property
    def use(self) -> str:
        """Which model of a training stage counts: ``best`` (validation) or ``last`` (end of the schedule)."""
        return str(self.s.get("use") or "best")

    def _train(self, model: str, model_args: dict[str, Any], out: Path, epochs: int, role: str = "student") -> dict:
        from ..training.train import run_training

        cfg = self._train_cfg(model, model_args, out, epochs, role)
        run_training(cfg)
        return {"model": model, "model_args": model_args, "epochs": epochs, "artifact": str(out / self.use)}

    def teacher_dir(self) -> Path:
        if self.s.get("teacher"):
            from ..artifact import resolve_artifact_dir

            return resolve_artifact_dir(self.s["teacher"])
        return self.out / "teacher" / self.use

    def stage_teacher(self) -> None:
        if self.s.get("teacher"):
            from ..artifact import read_config

            path = self.teacher_dir()
            n = int(read_config(path)["num_classes"])
            k = self.num_classes if self.num_classes is not None else self.preflight()
            if n != k:
                raise UsageError(f"--teacher {self.s['teacher']}: teacher has {n} classes, dataset "
                                 f"{self.s['dataset']!r} has {k}")
            self.log(f"[compress] teacher: using {path}")
            return
        self._stage("teacher", [self.out / "teacher" / self.use / "config.json"], lambda: self._train(
            self.s["teacher_model"], self.s["teacher_args"], self.out / "teacher", int(self.s["teacher_epochs"]),
            role="teacher"))

    def stage_student(self) -> None:
        self._stage("student", [self.out / "student" / self.use / "config.json"], lambda: self._train(
            self.s["student_model"], self.s["student_args"], self.out / "student", int(self.s["epochs"])))

    def stage_kd_student(self) -> None:
        def run() -> dict[str, Any]:
            from ..training.train import run_training
            from .api import build_distiller, write_distill_record

            kd = {"teacher": str(self.teacher_dir()), "kd": self.s["kd"], "hard_weight": self.s["hard_weight"],
                  "teacher_view": self.s.get("teacher_view") or "same"}
            cfg = self._train_cfg(self.s["student_model"], self.s["student_args"], self.out / "kd_student",
                                  int(self.s["epochs"]), distill=kd)
            distiller, tconf = build_distiller(cfg, kd["teacher"], kd["kd"], kd["hard_weight"])
            self.s["hard_weight_used"] = distiller.hard_weight
            write_distill_record(self.out / "kd_student", kd["teacher"], tconf, kd["kd"], distiller)
            run_training(cfg, distiller=distiller)
            return {**kd, "model": self.s["student_model"], "hard_weight": distiller.hard_weight,
                    "artifact": str(self.out / "kd_student" / self.use)}

        self._stage("kd_student", [self.out / "kd_student" / self.use / "config.json"], run)

    # -- export --------------------------------------------------------------------------------------
    def stage_export(self) -> None:
        int8 = self.out / "export" / "kd_student_int8.onnx"
        fp32 = self.out / "export" / "kd_student_fp32.onnx"

        def run() -> dict[str, Any]:
            from ..export.onnx_export import export_checkpoint

            ckpt = str(self.out / "kd_student" / self.use)
            size = self.s["img_size"]
            r8 = export_checkpoint(
                ckpt, int8, img_size=size, int8=True, calibration_dataset=self.s["dataset"],
                calibration_root=self.s["root"], calibration_split="train",
                calibration_images=int(self.s["calibration_images"]),
                calibration_dataset_args=dict(self.s["dataset_args"] or {}), check_images=0,
            )
            info = {"int8": str(int8), "int8_size_mb": r8["size_mb"],
                    "int8_weight_bits": r8["quantization"]["weight_bits"]}
            if self.s["ort_fp32"]:
                r32 = export_checkpoint(ckpt, fp32, img_size=size, check_images=0)
                info.update(fp32=str(fp32), fp32_size_mb=r32["size_mb"])
            return info

        outputs = [int8] + ([fp32] if self.s["ort_fp32"] else [])
        self._stage("export", outputs, run)

    def _eval_dataset(self):
        """The validation split, or with ``--holdout`` the held-out groups' frames of the training split."""
        from ..data import create_dataset

        train = dict(self.s.get("train") or {})
        if train.get("holdout"):
            from ..data.groups import parse_group_list
            from ..training.folds import heldout_dataset
            from .compress_folds import _split_settings

            return heldout_dataset(_split_settings(self.s), parse_group_list(train["holdout"]))
        return create_dataset(self.s["dataset"], root=self.s["root"], split=train.get("val_split", "val"),
                              **self.s["dataset_args"])

    def _row_sources(self) -> list[tuple[str, str, str, str]]:
        """(row name, label, checkpoint for load/bench, runtime)."""
        rows = [
            ("teacher", "teacher", str(self.teacher_dir()), "torch"),
            ("student", "student", str(self.out / "student" / self.use), "torch"),
            ("kd_student", "KD student", str(self.out / "kd_student" / self.use), "torch"),
            ("int8_kd_student", "INT8 KD student", str(self.out / "export" / "kd_student_int8.onnx"), "onnxruntime"),
        ]
        if self.s["ort_fp32"]:
            rows.append(("kd_student_ort_fp32", "KD student (ORT fp32)",
                         str(self.out / "export" / "kd_student_fp32.onnx"), "onnxruntime"))
        return rows

    def stage_eval(self) -> None:
        for name, _, ckpt, _ in self._row_sources():
            path = self.out / "eval" / f"{name}.json"

            def run(ckpt: str = ckpt, path: Path = path) -> dict[str, Any]:
                from ..inference.scoring import evaluate_model
                from ..inference.segmenter import load

                metrics, cm, _ = evaluate_model(load(ckpt), self._eval_dataset(),
                                                batch_size=int(self.s["eval_batch_size"]), progress=False,
                                                num_samples_png=0)
                atomic_write_json(path, {**metrics, "confusion": cm.tolist()})  # pooled over folds by --holdout each
                return {"mIoU": metrics.get("mIoU")}

            self._stage(f"eval_{name}", [path], run)

    def stage_bench(self) -> None:
        for name, _, ckpt, runtime in self._row_sources():
            path = self.out / "bench" / f"{name}.json"

            def run(ckpt: str = ckpt, path: Path = path, runtime: str = runtime) -> dict[str, Any]:
                from ..export.bench import benchmark

                result = benchmark(checkpoint=ckpt, img_size=self.s["img_size"], runtime=runtime,
                                   threads=self.s["threads"], runs=int(self.s["bench_runs"]),
                                   warmup=int(self.s["bench_warmup"]))
                atomic_write_json(path, result)
                return {"latency_ms": result.get("latency_ms_median")}

            self._stage(f"bench_{name}", [path], run)

    # -- summary and report ----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        from ..artifact import read_config

        rows, extra = [], []
        kd_params = None
        for name, label, ckpt, runtime in self._row_sources():
            ev = json.loads((self.out / "eval" / f"{name}.json").read_text())
            be = json.loads((self.out / "bench" / f"{name}.json").read_text())
            row: dict[str, Any] = {
                "name": name,
                "label": label,
                "path": ckpt,
                "runtime": runtime,
                "precision": be.get("precision"),
                "params": be.get("params"),
                "size_mb": be.get("size_mb"),
                "gflops": be.get("gflops"),
                "latency_ms": be.get("latency_ms_median"),
                "latency_ms_p90": be.get("latency_ms_p90"),
                "fps": be.get("fps"),
                "threads": be.get("threads"),
                "mIoU": ev.get("mIoU"),
                "pixel_accuracy": ev.get("pixel_accuracy"),
                "per_class": [{"name": c.get("name"), "iou": c.get("iou")} for c in ev.get("per_class", [])],
            }
            if runtime == "torch":
                conf = read_config(ckpt)
                row["architecture"] = conf.get("architecture")
                row["model_args"] = conf.get("model_args", {})
                if name == "kd_student":
                    kd_params = row["params"]
            else:
                row["architecture"] = f"{self.s['student_model']} (ONNX {row['precision'] or ''})".strip()
                row["onnx_initializer_elements"] = row["params"]
                row["params"] = kd_params  # same network, quantized: the torch count is the comparable one
            (rows if name != "kd_student_ort_fp32" else extra).append(row)
        settings = {k: self.s.get(k) for k in (
            "preset", "img_size", "teacher_model", "teacher_args", "student_model", "student_args",
            "teacher", "teacher_epochs", "epochs", "batch_size", "lr", "scheduler", "augment", "kd", "teacher_view",
            "seed", "calibration_images")}
        settings["hard_weight"] = self.state.get("kd_student", {}).get("hard_weight", self.s.get("hard_weight"))
        settings["bench"] = (f"CPU, median of {self.s['bench_runs']} runs, batch 1, "
                             f"{rows[0].get('threads')} thread(s), input {self.s['img_size'][0]}x{self.s['img_size'][1]}")
        num_val = None
        try:
            num_val = json.loads((self.out / "eval" / "teacher.json").read_text()).get("num_images")
        except (OSError, json.JSONDecodeError):
            pass
        return {
            "dataset": self.s["dataset"],
            "preset": self.s["preset"],
            "num_val_images": num_val,
            "settings": settings,
            "rows": rows,
            "extra_rows": extra,
            "stages": {k: v.get("seconds") for k, v in self.state.items() if not k.startswith("_")},
        }

    def stage_report(self) -> dict[str, Any]:
        from ..viz import save_pareto
        from .report import write_reports

        summary = self.summary()
        atomic_write_json(self.out / "compress.json", summary)
        pareto_rows = [dict(r, name=r["label"]) for r in summary["rows"]]
        save_pareto(pareto_rows, self.out / "pareto.png", x="latency_ms", y="mIoU", size="params")
        write_reports(self.out, {**summary, "rows": summary["rows"] + summary["extra_rows"]},
                      self.out / "pareto.png")
        return summary

    def preflight(self) -> int:
        """Before any stage: the dataset's class count as configured (options included) and every model this
        run will build, built once with that count, so a bad combination fails now, not after hours of
        teacher training."""
        from .api import dataset_num_classes

        self.num_classes = dataset_num_classes(self.s["dataset"], self.s["root"], self.s["dataset_args"])
        check_models(self.s, self.num_classes)
        return self.num_classes

    def print_plan(self) -> None:
        """Each stage's estimated wall time on this CPU, before any runs (``compress_plan``)."""
        from ..data import create_dataset
        from .compress_plan import format_plan, plan

        def count(split: str) -> int:
            return len(create_dataset(self.s["dataset"], root=self.s["root"], split=split, **self.s["dataset_args"]))

        train_split = dict(self.s.get("train") or {}).get("train_split", "train")
        todo = {k: v for k, v in plan(self.s, int(self.num_classes), count(train_split), len(self._eval_dataset())).items()
                if not (isinstance(self.state.get(k), dict) and self.state[k].get("done"))}
        self.estimates = todo
        for line in format_plan(todo):
            self.log(line)

    def run(self) -> dict[str, Any]:
        self.preflight()
        self.print_plan()
        self.stage_teacher()
        self.stage_student()
        self.stage_kd_student()
        self.stage_export()
        self.stage_eval()
        self.stage_bench()
        return self.stage_report()


def run_compress(args: argparse.Namespace) -> int:
    from ..io import ensure_output_dir

    ensure_output_dir(args.out, create=False)  # before any work
    settings = settings_from_args(args)
    from ..data import get_dataset_info

    get_dataset_info(settings["dataset"])  # unknown dataset: UsageError before any work
    out = Path(args.out)
    t0 = time.perf_counter()
    if getattr(args, "plan_only", False):
        comp = Compressor(out, settings)
        comp.state.pop("_settings", None)  # nothing is written: a plan does not claim OUT
        comp.preflight()
        comp.print_plan()
        return 0
    if str(settings["train"].get("holdout") or "").strip().lower() == "each":
        from .compress_folds import compress_folds

        compress_folds(out, settings, lambda fold_out, s: Compressor(fold_out, s).run())
        print(f"[compress] done in {time.perf_counter() - t0:.1f} s; cross-validation: {out / 'cv.md'}",
              file=sys.stderr)
        return 0
    comp = Compressor(out, settings)
    summary = comp.run()
    from .report import format_rows_markdown

    print(format_rows_markdown(summary["rows"] + summary["extra_rows"]))
    print(f"[compress] stages run: {', '.join(comp.ran) or 'none'}; skipped: {', '.join(comp.skipped) or 'none'}")
    print(f"[compress] done in {time.perf_counter() - t0:.1f} s; report: {out / 'report.html'}", file=sys.stderr)
    return 0
