"""``--keep-freed-memory``: glibc keeps freed blocks in the heap instead of handing them back to the kernel.

The switch is process-wide and cannot be undone, so its effect is checked in child processes: with it, a
64 MiB tensor comes from the heap (no mmap'd block) and the heap keeps the memory after the tensor is freed;
without it, glibc mmaps the block and unmaps it on free (the behaviour that costs CPU training its kernel
time). The training wiring is checked with the switch replaced by a recorder.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from distilseg.training import host_memory
from distilseg.training.train import run_training
from test_train_support import tiny_cfg

MIB = 2**20

pytestmark = pytest.mark.usefixtures("run_config_check")

CHILD = r"""
import ctypes, json, sys
import torch
from distilseg.training.host_memory import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
why_not = keep_freed_memory() if sys.argv[1] == "on" else "off"
before = libc.mallinfo2()
t = torch.ones(64 * 2**20, dtype=torch.uint8)
during = libc.mallinfo2()
del t
after = libc.mallinfo2()
print(json.dumps({"why_not": why_not, "mmapped": during.hblkhd - before.hblkhd,
                  "heap_grew": during.arena - before.arena, "heap_kept": after.arena - before.arena}))
"""


WORKER_CHILD = r"""
import functools, sys
import torch
from torch.utils.data import DataLoader, Dataset
from distilseg.training.datamodule import init_worker
from distilseg.training.host_memory import keep_freed_memory

def private_mib():
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Private_Dirty"):
            return int(line.split()[1]) // 1024

def step():  # a training step: activations of many sizes (about 1.1 GiB), written, then freed
    xs = [torch.ones(int(n)) for n in torch.linspace(1e6, 8e6, 64).tolist()]
    del xs

class Frames(Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        return torch.rand(3, 64, 80), torch.tensor(private_mib())

assert keep_freed_memory() is None
step()
init = functools.partial(init_worker, rank=0) if sys.argv[1] == "release" else None
loader = DataLoader(Frames(), batch_size=2, num_workers=1, worker_init_fn=init, persistent_workers=True)
for epoch in range(2):
    for batch in loader:
        step()  # the parent trains (reusing its freed memory) while the worker lives
print(int(batch[1].max()))
"""


def _worker_private_mib(setting: str) -> int:
    proc = subprocess.run([sys.executable, "-c", WORKER_CHILD, setting], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_data_loader_workers_do_not_keep_the_parents_freed_memory():
    """A forked worker shares the parent's freed heap; as the parent reuses it, the worker is left owning a copy of
    all of it, unless the worker hands that memory to the kernel first (``init_worker`` does)."""
    assert _worker_private_mib("keep") > 700  # the snapshot: most of the 1.1 GiB step
    assert _worker_private_mib("release") < 300


def _child(setting: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, setting], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_activations_stay_in_the_heap():
    try:
        import ctypes

        ctypes.CDLL(None).mallinfo2  # glibc 2.33+
    except AttributeError:
        pytest.skip("no glibc mallinfo2 to observe the heap with")
    plain = _child("off")
    assert plain["mmapped"] >= 64 * MIB and plain["heap_kept"] < 8 * MIB, plain
    kept = _child("on")
    assert kept["why_not"] is None
    # from the heap (which may have held a little free space already), and still there after the free
    assert kept["mmapped"] == 0 and kept["heap_grew"] >= 56 * MIB and kept["heap_kept"] == kept["heap_grew"], kept


def test_training_switches_it_on_warns_where_it_cannot_and_may_resume_with_it(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(1) or "not glibc (test)")
    out = tmp_path / "run"
    run_training(tiny_cfg(out, epochs=1))
    assert calls == []  # off by default
    assert yaml.safe_load((out / "config.yaml").read_text())["keep_freed_memory"] is False
    # a resumed run may switch it on: the same steps, only faster
    run_training(tiny_cfg(out, epochs=2, resume=True, keep_freed_memory=True))
    assert calls == [1]
    err = capsys.readouterr().err
    assert "distilseg: --keep-freed-memory has no effect here: not glibc (test)" in err.splitlines()
    assert yaml.safe_load((out / "config.yaml").read_text())["keep_freed_memory"] is True
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + one row per epoch
