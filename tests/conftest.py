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


# ---- every OUT/config.yaml a run writes in this suite reproduces that run's settings ------------------
#
# `run_training` writes the run's resolved settings to OUT/config.yaml (engine.config.save_config). For every such
# file written during the session, the check below reads it back exactly as `distilseg train|distill --config
# OUT/config.yaml --out OUT` would (build_parser + resolve_config, with distill's settings when the file has
# them) and compares the resolved settings with the saved ones key by key. A mismatch (or a file that does not
# read back) fails the test phase (setup/call/teardown) that wrote it, naming the key.
#   * in-process runs: save_config is wrapped (in engine.config and in every distilseg module that imported it
#     by name), so each write is checked right after it happens;
#   * runs in subprocesses (test_resume, test_run_safety, test_ddp, ...): a test phase that started a subprocess
#     is followed by a scan of the session's temporary folder for run configs (config.yaml with the recorded
#     `num_classes`) written during that phase.
# Normalised, as documented in engine.config: `num_classes` (RECORDED: derived again by the run, not read back)
# and `out`, which the re-run is given as the folder holding the file, so the two are compared as paths.
# No test is excluded: no test in the suite writes a broken OUT/config.yaml on purpose.
import subprocess  # noqa: E402
import time  # noqa: E402

_REPRO: dict = {"files": 0, "train": 0, "distill": 0, "subprocess": 0, "failed": 0, "problems": [],
                "spawned": False, "checked": set(), "since": 0, "config": None}


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


def check_saved_config(path, cwd=None) -> list[str]:
    """Mismatches between ``path`` and its re-read (see ``_check``), one line per key; [] when they agree."""
    return _check(path, cwd)[1]


def _check(path, cwd=None) -> tuple[str, list[str]]:
    """The command, and the mismatches between ``path`` (an OUT/config.yaml) and what ``distilseg train|distill --config path --out
    OUT`` resolves it to, one line per key; [] when they agree. ``cwd``: the folder a relative saved ``out``
    was relative to (default: the current one)."""
    import yaml

    from distilseg.cli import build_parser
    from distilseg.distill.commands import DISTILL_DEFAULTS
    from distilseg.engine.config import RECORDED, resolve_config
    from distilseg.errors import DistilsegError

    path = Path(path).resolve()
    saved = yaml.safe_load(path.read_text())
    if not isinstance(saved, dict):
        return "train", [f"{path}: not a mapping of settings"]
    command = "distill" if set(saved) & set(DISTILL_DEFAULTS) else "train"
    try:
        args = build_parser().parse_args([command, "--config", str(path), "--out", str(path.parent)])
        cfg = resolve_config(args, extra=DISTILL_DEFAULTS if command == "distill" else None)
    except (DistilsegError, SystemExit) as exc:
        return command, [f"{path}: `distilseg {command} --config` does not read it back: {exc}"]
    problems = []
    for key in [k for k in [*saved, *[k for k in cfg if k not in saved]] if k not in RECORDED]:
        if key not in saved:
            problems.append(f"{path}: key {key!r} is not saved (the re-run would use {cfg[key]!r})")
            continue
        mine, again = saved[key], cfg[key]
        if key == "out":
            base = Path(cwd) if cwd is not None else Path.cwd()
            mine = None if mine is None else str((base / str(mine)).resolve())
            again = str(Path(again).resolve())
        if not _same(mine, again):
            problems.append(f"{path}: key {key!r} saved as {saved[key]!r} but `distilseg {command} --config` "
                            f"resolves it to {cfg[key]!r}")
    return command, problems


def _record(path, cwd=None) -> None:
    path = Path(path).resolve()
    try:
        command, problems = _check(path, cwd)
        _REPRO[command] += 1
    except Exception as exc:  # noqa: BLE001 - the checker must never break the run it checks
        problems = [f"{path}: could not be checked: {type(exc).__name__}: {exc}"]
    _REPRO["files"] += 1
    _REPRO["checked"].add((str(path), path.stat().st_mtime_ns if path.exists() else 0))
    _REPRO["problems"].extend(problems)


def _install_config_check() -> None:
    import sys

    import distilseg.cli  # noqa: F401 - the command modules
    import distilseg.engine.config as config
    import distilseg.engine.train  # noqa: F401 - imports save_config by name

    original = config.save_config
    if getattr(original, "_repro_checked", False):
        return

    def save_config(cfg, out):
        written = original(cfg, out)
        _record(written)
        return written

    save_config._repro_checked = True
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "distilseg" and getattr(module, "save_config", None) is original:
            module.save_config = save_config

    popen_init = subprocess.Popen.__init__

    def init(self, *args, **kwargs):
        _REPRO["spawned"] = True
        return popen_init(self, *args, **kwargs)

    subprocess.Popen.__init__ = init


def pytest_configure(config):
    _install_config_check()
    _REPRO["config"] = config


def _scan_subprocess_runs() -> None:
    """config.yaml files that runs in subprocesses wrote during this phase (the in-process ones are checked)."""
    import yaml

    factory = getattr(_REPRO.get("config"), "_tmp_path_factory", None)
    root, since = (factory.getbasetemp() if factory else None), _REPRO["since"]
    if root is None or not Path(root).is_dir():
        return
    for folder, _dirs, files in os.walk(root):
        if "config.yaml" not in files:
            continue
        path = Path(folder, "config.yaml").resolve()
        try:
            stamp = path.stat().st_mtime_ns
            if stamp < since or (str(path), stamp) in _REPRO["checked"]:
                continue
            saved = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(saved, dict) and "num_classes" in saved and "out" in saved:  # written by a run
            _REPRO["subprocess"] += 1
            _record(path)


def _checked_phase():
    _REPRO.update(problems=[], spawned=False, checked=set(), since=time.time_ns() - 50_000_000)
    try:
        result = yield
    finally:
        if _REPRO["spawned"]:
            _scan_subprocess_runs()
        problems = _REPRO["problems"]
        _REPRO["problems"] = []
    if problems:
        _REPRO["failed"] += len(problems)
        pytest.fail("OUT/config.yaml does not reproduce its run:\n" + "\n".join(problems), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _checked_phase())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _checked_phase())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    return (yield from _checked_phase())


def pytest_terminal_summary(terminalreporter):
    r = _REPRO
    terminalreporter.write_line(
        f"config reproduce check: {r['files']} OUT/config.yaml files of runs read back through the CLI "
        f"({r['train']} train, {r['distill']} distill; {r['subprocess']} written by runs in subprocesses), "
        f"{r['failed']} mismatches")


@pytest.fixture
def config_reproduce_check():
    """``check_saved_config``: the mismatches (one line per key) between an OUT/config.yaml and its re-read."""
    return check_saved_config


@pytest.fixture
def config_reproduce_pending():
    """The mismatches recorded so far in this test phase (a test may take them, clearing the list)."""
    return lambda: _REPRO["problems"]
