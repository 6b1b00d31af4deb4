"""``distilseg models``: the listing counts parameters exactly and survives a broken factory."""
from __future__ import annotations

import contextlib
import io
import json

import pytest

from distilseg.cli import main
from distilseg.models import create_model, get_model_entry
from distilseg.models import registry

SEED_MODELS = ["attention_unet", "dilated_dws_unet", "lite_student", "msa_unet", "msa_unet_student", "unet"]


pytestmark = pytest.mark.usefixtures("run_config_check")


@pytest.fixture(scope="module")
def listing():
    """Run ``distilseg models --json`` once (it builds every registered model)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["models", "--json"])
    return code, json.loads(buf.getvalue())


def test_models_json_lists_seed_models_with_exact_param_counts(listing):
    code, rows = listing
    assert code == 0
    by_name = {r["name"]: r for r in rows}
    assert [r["name"] for r in rows] == sorted(by_name)
    for name in SEED_MODELS:
        row = by_name[name]
        assert set(row) == {"name", "description", "params"}, row
        expected = sum(p.numel() for p in create_model(name, 19).parameters())
        assert isinstance(row["params"], int) and row["params"] == expected, name
        assert row["description"] == get_model_entry(name).description != ""


def test_models_json_num_classes_changes_the_head(capsys):
    assert main(["models", "--json", "--num-classes", "11"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    expected = sum(p.numel() for p in create_model("lite_student", 11).parameters())
    assert rows["lite_student"]["params"] == expected


def test_models_table_and_broken_factory(monkeypatch, capsys):
    def broken(num_classes: int, *, pretrained=None):
        """A model whose optional dependency is missing."""
        raise ImportError("no module named 'imaginary'")

    entry = registry.ModelEntry("zz_broken", broken, "A model whose optional dependency is missing.", {})
    monkeypatch.setitem(registry._REGISTRY, "zz_broken", entry)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "PARAMS", "DESCRIPTION"]
    row = next(line for line in lines if line.startswith("lite_student "))
    assert row.split()[1].endswith("K")
    broken_row = next(line for line in lines if line.startswith("zz_broken "))
    assert broken_row.split()[1] == "-"
    assert "ImportError: no module named 'imaginary'" in broken_row

    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["zz_broken"]["params"] is None
    assert rows["zz_broken"]["error"] == "ImportError: no module named 'imaginary'"
    assert isinstance(rows["unet"]["params"], int)


def test_models_rejects_non_positive_num_classes(capsys):
    assert main(["models", "--num-classes", "0"]) == 2
    assert "distilseg models: error: --num-classes must be a positive integer" in capsys.readouterr().err


def test_models_lists_the_bundled_models_under_the_architectures(capsys):
    import distilseg
    from distilseg.models.commands import describe_zoo
    from distilseg.zoo import list_zoo, resolve_zoo

    assert main(["models", "--num-classes", "11"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("BUNDLED MODEL"))
    assert head > next(i for i, line in enumerate(lines) if line.startswith("NAME"))
    assert "SAME-STREET VAL mIoU" in lines[head]
    rows = describe_zoo()
    assert [r["name"] for r in rows] == [f"zoo:{n}" for n in list_zoo()] and len(rows) >= 3
    for row, line in zip(rows, lines[head + 1: head + 1 + len(rows)]):
        config = json.loads((resolve_zoo(row["name"]) / "config.json").read_text())
        n = row["params"]
        params = f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"
        assert line.split() == [row["name"], row["architecture"], params, config["dataset"],
                                f"{100 * config['metrics']['mIoU']:.1f}", "%"]
    student = next(r for r in rows if r["name"] == "zoo:camvid-student-kd")
    model = distilseg.load("zoo:camvid-student-kd").model
    assert student["params"] == sum(p.numel() for p in model.parameters())  # parameters, not BatchNorm buffers
    assert student["architecture"] == "fpn(efficientnet_lite0)" and student["dataset"] == "camvid"
