"""Tickets without lotto: `lotto export-mask` writes a mask as safetensors that plain PyTorch code loads and
applies with torch.nn.utils.prune."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lotto import cli, pruning
from lotto.masks import Mask
from lotto.models import build_model, prunable_names

# The researcher's side: torch and safetensors only. Their own LeNet (the same parameter names as lotto's), a
# fresh initialisation, the exported mask applied with torch's pruning utilities.
APPLY = r"""
import sys
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.nn.utils import prune


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 3), nn.Conv2d(6, 16, 3)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.max_pool2d(F.relu(self.conv1(x)), 2))), 2)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))))


torch.manual_seed(123)
model = LeNet()
masks = load_file(sys.argv[1])
for name, mask in masks.items():
    module, param = name.rsplit(".", 1)
    assert mask.dtype == torch.bool, mask.dtype
    prune.custom_from_mask(model.get_submodule(module), param, mask)
kept = sum(int(torch.count_nonzero(model.get_submodule(n.rsplit(".", 1)[0]).weight)) for n in masks)
assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
assert not [m for m in sys.modules if m == "lotto" or m.startswith("lotto.")], "lotto was imported"
print(kept, sorted(masks))
"""


@pytest.fixture(scope="module")
def ticket(tmp_path_factory):
    """A real ticket: lotto's LeNet pruned to 70% by global magnitude, saved as a .mask file."""
    model = build_model({"name": "lenet"}, 1, 10, 28, 7)
    names = prunable_names(model)
    state = {n: p.detach().numpy() for n, p in model.state_dict().items()}
    mask = pruning.global_magnitude({n: state[n] for n in names}, 0.7).with_meta(method="global magnitude")
    path = tmp_path_factory.mktemp("ticket") / "s0.7000.mask"
    mask.save(path)
    return path, Mask.load(path)


def test_export_then_apply_with_torch_alone(ticket, tmp_path):
    path, mask = ticket
    out = tmp_path / "out" / "ticket.safetensors"
    assert cli.main(["export-mask", str(path), "--out", str(out)]) == 0
    assert [p.name for p in out.parent.iterdir()] == ["ticket.safetensors"]  # no temporary left
    run = subprocess.run([sys.executable, "-c", APPLY, str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    kept, names = run.stdout.split(" ", 1)
    assert int(kept) == mask.kept() == round(0.3 * mask.total)
    assert json.loads(names.replace("'", '"')) == sorted(mask.names)


def test_exported_tensors_and_metadata_are_the_mask(ticket, tmp_path):
    from safetensors import safe_open

    path, mask = ticket
    out = tmp_path / "t.safetensors"
    assert cli.main(["export-mask", str(path), "--out", str(out)]) == 0
    with safe_open(str(out), "np") as f:
        meta = f.metadata()
        layers = {k: f.get_tensor(k) for k in f.keys()}
    assert set(layers) == set(mask.names)
    for name, arr in mask.layers().items():
        assert layers[name].dtype == np.bool_ and np.array_equal(layers[name], arr)
    assert meta["format"] == "lotto-mask" and int(meta["kept"]) == mask.kept() and int(meta["total"]) == mask.total
    assert meta["sha256"] == mask.checksum()
    assert json.loads(meta["lotto"])["method"] == "global magnitude"


def test_an_exported_mask_is_the_same_bytes_from_every_process(ticket, tmp_path):
    """Five metadata keys in a hash map of random order per process: the export sorts them, so exporting one
    mask twice gives one file (its sha256 can be published beside the ticket)."""
    path, _ = ticket
    outs = [tmp_path / f"e{i}.safetensors" for i in range(4)]
    for out in outs:
        subprocess.run([str(Path(sys.executable).parent / "lotto"), "export-mask", str(path), "--out", str(out)],
                       check=True, capture_output=True)
    assert len({o.read_bytes() for o in outs}) == 1


def test_a_damaged_mask_is_refused_naming_the_file(ticket, tmp_path, capsys):
    path, _ = ticket
    bad = tmp_path / "bad.mask"
    bad.write_bytes(path.read_bytes()[:-3])
    out = tmp_path / "bad.safetensors"
    assert cli.main(["export-mask", str(bad), "--out", str(out)]) == 1
    assert str(bad) in capsys.readouterr().err
    assert not out.exists()
