"""Nothing read from disk may run code: pickles with a malicious ``__reduce__`` are refused, not executed.

Each payload is first shown to be live (plain ``pickle.loads`` does create its marker file), so the
refusal checks below cannot pass merely because the payload was inert.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

import distilseg
from distilseg.errors import CheckpointError
from distilseg.io import safe_torch_load


class _ExecPayload:
    """Unpickling this calls ``exec`` which creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


class _SystemPayload:
    """Unpickling this calls ``os.system('touch marker')``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


PAYLOADS = [_ExecPayload]
if os.name == "posix":
    PAYLOADS.append(_SystemPayload)


def _write_payload(path: Path, payload: object, fmt: str) -> None:
    if fmt == "torch":  # torch.save's zip container with data.pkl inside
        torch.save({"state_dict": payload}, path)
    else:  # a bare pickle stream
        path.write_bytes(pickle.dumps({"state_dict": payload}, protocol=2))


@pytest.mark.parametrize("payload_cls", PAYLOADS)
def test_payload_is_live_with_plain_pickle(tmp_path: Path, payload_cls) -> None:
    marker = tmp_path / "pwned_control"
    pickle.loads(pickle.dumps(payload_cls(marker)))
    assert marker.exists()


@pytest.mark.parametrize("payload_cls", PAYLOADS)
@pytest.mark.parametrize("fmt", ["torch", "pickle"])
def test_artifact_weights_pickle_refused(tmp_path: Path, payload_cls, fmt: str) -> None:
    from distilseg.artifact import save_artifact
    from distilseg.models import create_model

    marker = tmp_path / "pwned"
    art = tmp_path / "art"
    save_artifact(art, create_model("unet", 2, depth=2, base_width=4), {"num_classes": 2})
    _write_payload(art / "model.safetensors", payload_cls(marker), fmt)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        distilseg.load(art)
    with pytest.raises(CheckpointError):
        distilseg.load(tmp_path)  # no artifact directly here: refused too, and never runs the payload
    assert not marker.exists()


@pytest.mark.parametrize("payload_cls", PAYLOADS)
@pytest.mark.parametrize("name", ["model.pt", "last.ckpt"])
@pytest.mark.parametrize("fmt", ["torch", "pickle"])
def test_safe_torch_load_refuses_code(tmp_path: Path, payload_cls, name: str, fmt: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / name
    _write_payload(path, payload_cls(marker), fmt)
    with pytest.raises(CheckpointError, match=name):
        safe_torch_load(path)
    assert not marker.exists()


def test_safe_torch_load_still_reads_plain_weights(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "epoch": 2}, path)
    obj = safe_torch_load(path)
    assert obj["epoch"] == 2
    assert torch.equal(obj["state_dict"]["w"], torch.arange(3.0))
