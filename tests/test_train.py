"""The trainer on real MNIST digits: pruned weights stay exactly zero, and runs are reproducible."""

import pytest
import torch

from lotto import models, pruning, train
from lotto.data import DeviceData, stage
from lotto.masks import Mask

TRAIN_CFG = dict(
    lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=False, batch_size=64, epochs=3.0, milestones=[2.5],
    gamma=0.1, warmup_steps=5,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "mnist.npz"
    stage({"dataset": "mnist_embedded", "source": "embedded", "train_size": 640, "test_size": 200}, path)
    return DeviceData.load(path, "cpu", augment=False)


def fresh(data, seed=7):
    return models.build_model({"name": "lenet"}, data.in_channels, data.num_classes, data.image_size, init_seed=seed)


def run(model, data, mask=None, start=0, end=None):
    sched = train.Schedule.from_config(TRAIN_CFG, data.num_train)
    end = sched.total_steps if end is None else end
    return train.train(model, data, sched, start, end, data_seed=11, aug_seed=12, mask=mask, log=lambda m: None)


def weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if n in models.prunable_names(model)}


def test_pruned_weights_stay_exactly_zero_under_momentum_and_weight_decay(data):
    torch.set_num_threads(1)
    model = fresh(data)
    run(model, data, end=5)  # a little training, so that magnitudes are not just the init's
    mask = pruning.global_magnitude(weights(model), 0.8)
    before = weights(model)
    stats = run(model, data, mask=mask, start=5)
    after = weights(model)
    keep = mask.to_torch("cpu")
    for name, w in after.items():
        assert torch.count_nonzero(w[~keep[name]]) == 0, name  # exactly zero, every single one
        moved = (w[keep[name]] != before[name][keep[name]]).float().mean()
        assert moved > 0.9, name  # the kept weights did train
    assert stats["steps_trained"] == 30 - 5
    # and the network still learns something under the mask
    acc = train.evaluate(model, data.test_batches(200), "cpu")["accuracy"]
    assert acc > 0.3


def test_same_config_twice_gives_identical_weights_and_masks(data):
    torch.set_num_threads(1)
    a, b = fresh(data), fresh(data)
    run(a, data)
    run(b, data)
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[n], wb[n]) for n in wa)
    ma, mb = pruning.global_magnitude(wa, 0.9), pruning.global_magnitude(wb, 0.9)
    assert ma.bits.tobytes() == mb.bits.tobytes()
    # another data-order seed is another network: the noise streams matter
    c = fresh(data)
    sched = train.Schedule.from_config(TRAIN_CFG, data.num_train)
    train.train(c, data, sched, 0, sched.total_steps, data_seed=99, aug_seed=12, log=lambda m: None)
    assert not torch.equal(weights(c)["conv1.weight"], wa["conv1.weight"])


def test_schedule_is_step_based():
    sched = train.Schedule.from_config({**TRAIN_CFG, "warmup_steps": 0, "epochs": 160, "milestones": [80, 120], "batch_size": 128}, 50000)
    assert sched.steps_per_epoch == 391 and sched.total_steps == 62560
    assert sched.milestones == (31280, 46920)
    assert sched.lr_at(0) == 0.05 and sched.lr_at(31279) == 0.05
    warm = train.Schedule.from_config(TRAIN_CFG, 640)
    assert warm.lr_at(0) == pytest.approx(0.01) and warm.lr_at(4) == 0.05 and warm.total_steps == 30
    assert sched.lr_at(31280) == pytest.approx(0.005) and sched.lr_at(46920) == pytest.approx(0.0005)


def test_mask_from_another_model_is_refused(data):
    model = fresh(data)
    other = Mask.ones([("x.weight", (3, 3))])
    with pytest.raises((KeyError, ValueError)):
        run(model, data, mask=other, end=1)


# --------------------------------------------------------------------------- the optimizer
def _sgd_steps(opt, model, data, masks, steps, first=0):
    import torch.nn.functional as F

    params = dict(model.named_parameters())
    for step in range(first, first + steps):
        for g in opt.param_groups:
            g["lr"] = 0.05 * (0.5 if step >= 3 else 1.0)
        x, y = data.train_batch(step, 64, 11, 12)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        for name, m in masks.items():
            params[name].grad.mul_(m)
        params["fc3.bias"].grad = None  # a parameter without a gradient is skipped, momentum and all
        opt.step()


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_is_torch_optim_sgd_bit_for_bit_and_shares_its_resume_state(data, nesterov):
    """lotto.train.SGD (torch's functional update without the optimizer class, which imports torch._dynamo)
    gives the very weights of torch.optim.SGD, and either's state_dict resumes the other."""
    torch.set_num_threads(1)
    a, b, c = fresh(data), fresh(data), fresh(data)
    mask = pruning.global_magnitude(weights(a), 0.5)
    masks = mask.to_torch("cpu")
    masks = {n: m.float() for n, m in masks.items()}
    hp = dict(lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    ref = torch.optim.SGD(a.parameters(), **hp)
    ours = train.SGD(b.parameters(), **hp)
    _sgd_steps(ref, a, data, masks, 4)
    _sgd_steps(ours, b, data, masks, 4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    saved = ref.state_dict()
    assert ours.state_dict().keys() == saved.keys()
    assert sorted(ours.state_dict()["state"]) == sorted(saved["state"])  # the same parameters have momentum
    # torch's state into ours (and back) on a third copy: the continuation is the uninterrupted run's
    c.load_state_dict(a.state_dict())
    resumed = train.SGD(c.parameters(), **hp)
    resumed.load_state_dict(saved)
    back = torch.optim.SGD(fresh(data).parameters(), **hp)
    back.load_state_dict(ours.state_dict())
    _sgd_steps(ref, a, data, masks, 2, first=4)
    _sgd_steps(resumed, c, data, masks, 2, first=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    with pytest.raises(ValueError, match="parameters"):
        train.SGD(list(a.parameters())[:2], **hp).load_state_dict(saved)


def test_training_imports_neither_dynamo_nor_torchvision(tmp_path):
    """What a training job's start-up costs: torch, not torch._dynamo (torch.optim's step imports it, ~2 s),
    not sympy (Module.to_empty from the meta device imports it, ~0.4 s) and not torchvision (only its own
    architectures need it)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import sys
        from lotto import models, train
        from lotto.data import DeviceData, stage
        stage({{"dataset": "mnist_embedded", "source": "embedded", "train_size": 128, "test_size": 64}},
              {str(tmp_path / "d.npz")!r})
        d = DeviceData.load({str(tmp_path / "d.npz")!r}, "cpu", augment=True)
        m = models.build_model({{"name": "lenet"}}, d.in_channels, d.num_classes, d.image_size, init_seed=1)
        s = train.Schedule.from_config({TRAIN_CFG!r}, d.num_train)
        train.train(m, d, s, 0, 3, 1, 2, log=lambda m: None, resume_path={str(tmp_path / "r.pt")!r},
                    checkpoint_every=2)
        train.evaluate(m, d.test_batches(64), "cpu")
        print(sorted(k for k in ("torch._dynamo", "torchvision", "sympy") if k in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
