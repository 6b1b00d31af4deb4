"""Shared test settings: tiny thread count (CI has 2 cores) and the shared datasets folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """``../shared/datasets`` next to the project; tests that need it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def shared_labels(shared_datasets: Path) -> Path:
    path = shared_datasets / "labels"
    if not path.is_dir():
        pytest.skip(f"shared label tables not found at {path}")
    return path


@pytest.fixture(scope="session")
def camvid_root(shared_datasets: Path) -> Path:
    path = shared_datasets / "camvid"
    if not (path / "train").is_dir():
        pytest.skip(f"CamVid not found at {path}")
    return path


# ---- every OUT/config.yaml a run writes reproduces that run's settings ----------------------------------------
#
# A test that runs training (in-process or in a subprocess) asks for the ``run_config_check`` fixture (most do it
# for the whole file: ``pytestmark = pytest.mark.usefixtures("run_config_check")``). When the test ends, the
# fixture finds the run configs (config.yaml with the recorded ``num_classes`` and ``out``) written under the
# session's temporary folder during the test, reads each back exactly as `distilseg train|distill --config
# OUT/config.yaml --out OUT` would (build_parser + resolve_config, with distill's settings when the file has
# them) and compares the resolved settings with the saved ones key by key; a mismatch (or a file that does not
# read back) fails the test, naming the key. Nothing is patched. At the end of the session, a run config that no
# test checked (a test that trains without asking for the fixture) fails the session, naming the file.
# Normalised, as documented in training.config: `num_classes` (RECORDED: derived again by the run, not read back)
# and `out`, which the re-run is given as the folder holding the file, so the two are compared as paths.
_REPRO: dict = {"files": 0, "train": 0, "distill": 0, "failed": 0, "checked": set(), "config": None}


def _same(a, b) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b  # 1 and 1.0: the same setting
    return type(a) is type(b) and a == b


def _same_folder(saved_out, folder: Path) -> bool:
    """A relative saved ``out`` was relative to the run's working folder, which is gone by now: it names
    ``folder`` when it is that folder's tail."""
    if saved_out is None:
        return False
    mine = Path(str(saved_out))
    if mine.is_absolute():
        return mine.resolve() == folder
    parts = [x for x in mine.parts if x not in (".", "")]
    return not parts or list(folder.parts[-len(parts):]) == parts


def check_saved_config(path) -> list[str]:
    """Mismatches between ``path`` and its re-read (see ``_check``), one line per key; [] when they agree."""
    return _check(path)[1]


def _check(path) -> tuple[str, list[str]]:
    """The command, and the mismatches between ``path`` (an OUT/config.yaml) and what ``distilseg train|distill
    --config path --out OUT`` resolves it to, one line per key; [] when they agree."""
    import yaml

    from distilseg.cli import build_parser
    from distilseg.distill.api import DistillConfig
    from distilseg.training.config import RECORDED, TrainConfig, resolve_config
    from distilseg.errors import DistilsegError

    path = Path(path).resolve()
    saved = yaml.safe_load(path.read_text())
    if not isinstance(saved, dict):
        return "train", [f"{path}: not a mapping of settings"]
    command = "distill" if set(saved) & DistillConfig.own_settings() else "train"
    try:
        args = build_parser().parse_args([command, "--config", str(path), "--out", str(path.parent)])
        cfg = resolve_config(args, DistillConfig if command == "distill" else TrainConfig).to_dict()
    except (DistilsegError, SystemExit) as exc:
        return command, [f"{path}: `distilseg {command} --config` does not read it back: {exc}"]
    problems = []
    for key in [k for k in [*saved, *[k for k in cfg if k not in saved]] if k not in RECORDED]:
        if key not in saved:
            problems.append(f"{path}: key {key!r} is not saved (the re-run would use {cfg[key]!r})")
            continue
        same = _same_folder(saved[key], path.parent) if key == "out" else _same(saved[key], cfg[key])
        if not same:
            problems.append(f"{path}: key {key!r} saved as {saved[key]!r} but `distilseg {command} --config` "
                            f"resolves it to {cfg[key]!r}")
    return command, problems


_RUN_INTERNALS = {"logs", "tensorboard", "checkpoints", "best", "last"}  # folders a run writes: no configs there


def _run_configs(tops: list[Path] | None = None) -> list[Path]:
    """Run configs (config.yaml with the recorded ``num_classes`` and ``out``) under the session's temporary
    folder (or only under ``tops``, folders in it) that are not checked yet (a run that rewrites its config is
    checked again)."""
    import yaml

    found: list[Path] = []
    if tops is None:
        root = _basetemp()
        tops = [root] if root is not None else []
    for top in tops:
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d not in _RUN_INTERNALS]
            if "config.yaml" not in files:
                continue
            path = Path(folder, "config.yaml").resolve()
            try:
                stamp = path.stat().st_mtime_ns
                if (str(path), stamp) in _REPRO["checked"]:
                    continue
                saved = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(saved, dict) and "num_classes" in saved and "out" in saved:
                found.append(path)
    return found


def _basetemp() -> Path | None:
    factory = getattr(_REPRO.get("config"), "_tmp_path_factory", None)
    root = factory.getbasetemp() if factory else None
    return Path(root) if root is not None and Path(root).is_dir() else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before a test module's first test (and its fixtures): note the temporary folders already there."""
    module = getattr(item.module, "__name__", None)
    if _REPRO.get("module") != module:
        root = _basetemp()
        _REPRO.update(module=module, before={p.name for p in root.iterdir()} if root is not None else set())


def _module_folders() -> list[Path]:
    """The session's temporary folders made since the current test module's first test began (its tests'
    tmp_path and its fixtures' mktemp folders): where its runs write. Walking only these keeps the check
    cheap; a run written anywhere else is still found by the end-of-session check."""
    root = _basetemp()
    if root is None:
        return []
    return [p for p in root.iterdir() if p.name not in _REPRO.get("before", set()) and p.is_dir()]


def check_run_configs(tops: list[Path] | None = None) -> list[str]:
    """Check every run config not checked yet (under ``tops``, default: anywhere); the mismatches, one line
    per key."""
    problems: list[str] = []
    for path in _run_configs(tops):
        try:
            command, found = _check(path)
            _REPRO[command] += 1
        except Exception as exc:  # noqa: BLE001 - the checker must never break the run it checks
            found = [f"{path}: could not be checked: {type(exc).__name__}: {exc}"]
        _REPRO["files"] += 1
        _REPRO["checked"].add((str(path), path.stat().st_mtime_ns))
        problems.extend(found)
    return problems


def pytest_configure(config):
    _REPRO["config"] = config


@pytest.fixture
def run_config_check():
    """After the test: every OUT/config.yaml its runs wrote reads back through the CLI to the same settings."""
    yield
    problems = check_run_configs(_module_folders())
    if problems:
        _REPRO["failed"] += len(problems)
        pytest.fail("OUT/config.yaml does not reproduce its run:\n" + "\n".join(problems), pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    unchecked = _run_configs()
    if unchecked:
        print("\nrun configs written by tests that do not ask for the run_config_check fixture:\n  "
              + "\n  ".join(map(str, unchecked)))
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    r = _REPRO
    terminalreporter.write_line(
        f"config reproduce check: {r['files']} OUT/config.yaml files of runs read back through the CLI "
        f"({r['train']} train, {r['distill']} distill), {r['failed']} mismatches")


@pytest.fixture
def config_reproduce_check():
    """``check_saved_config``: the mismatches (one line per key) between an OUT/config.yaml and its re-read."""
    return check_saved_config


@pytest.fixture
def config_reproduce_pending():
    """``check_run_configs``: what the ``run_config_check`` fixture reports (and marks checked) after a test."""
    return check_run_configs
