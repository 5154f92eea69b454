"""The trainer on real MNIST digits: pruned weights stay exactly zero, and runs are reproducible."""

import json
import math
import re

import pandas as pd
import pytest
import torch

from lotto import curves, models, pruning, train
from lotto.data import DeviceData
from lotto.staging import stage
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


# --------------------------------------------------------------------------- progress and the training curve
NON_TIMING = [c for c in curves.COLUMNS if c not in curves.TIMING_COLUMNS]


def test_log_shows_elapsed_and_eta_and_the_curve_has_a_row_per_interval(data):
    torch.set_num_threads(1)
    sched = train.Schedule.from_config(TRAIN_CFG, data.num_train)
    messages = []
    stats = train.train(fresh(data), data, sched, 3, 16, data_seed=11, aug_seed=12, log=messages.append,
                        log_every=5)
    steps = [m for m in messages if m.startswith("step ")]
    assert len(steps) == 4  # steps 5, 10, 15 and the last one, 16
    assert re.fullmatch(r"step 10/16 epoch 1\.00 lr 0\.05 loss \d\.\d{4} acc \d\.\d{4} images/s \d+\.\d "
                        r"elapsed \d+s eta \d+s", steps[1]), steps[1]
    assert steps[-1].endswith(" eta 0s")
    curve = stats["curve"]
    assert [r["step"] for r in curve] == [5, 10, 15, 16] and list(curve[0]) == list(curves.COLUMNS)
    assert [r["epoch"] for r in curve] == [5 / 10, 1.0, 1.5, 1.6]
    assert all(0 < r["loss"] < 5 and 0 <= r["accuracy"] <= 1 and r["images_per_s"] > 0 for r in curve)
    assert [r["elapsed_s"] for r in curve] == sorted(r["elapsed_s"] for r in curve)


def test_resumed_run_has_the_curve_of_an_uninterrupted_one(data, tmp_path):
    """Interrupted mid-interval (log_every 3, state every 4 steps): the rows before the state and the interval
    it cut come back from the state, so every non-timing value equals the uninterrupted run's."""
    torch.set_num_threads(1)
    sched = train.Schedule.from_config(TRAIN_CFG, data.num_train)
    kw = dict(schedule=sched, start=0, end=sched.total_steps, data_seed=11, aug_seed=12, log_every=3,
              checkpoint_every=4, run_fingerprint="fp")
    ref = train.train(fresh(data), data, log=lambda m: None, **kw)["curve"]

    class Stop(Exception):
        pass

    def stop_after_state_at_8(msg):
        if msg.startswith("step 9/"):
            raise Stop  # the state of step 8 is saved; the interval 7-9 is cut at 8

    state = tmp_path / "state.pt"
    with pytest.raises(Stop):
        train.train(fresh(data), data, log=stop_after_state_at_8, resume_path=state, **kw)
    messages = []
    resumed = train.train(fresh(data), data, log=messages.append, resume_path=state, **kw)["curve"]
    assert any(m.startswith("resumed from step 8") for m in messages), messages
    assert [r["step"] for r in ref] == list(range(3, 30, 3)) + [30]
    assert [{k: r[k] for k in NON_TIMING} for r in resumed] == [{k: r[k] for k in NON_TIMING} for r in ref]


def test_lotto_train_writes_the_curve_beside_the_checkpoint(tmp_path):
    """`lotto train --curve` (runner.run_training's curve_path): the rows of the run, written atomically."""
    from lotto import cli

    cfg = json.dumps({"data": {"dataset": "mnist_embedded", "source": "embedded", "train_size": 320,
                               "test_size": 64},
                      "model": {"name": "lenet"},
                      "training": {**TRAIN_CFG, "epochs": 1.0, "milestones": [], "log_every": 2}})
    data, init = tmp_path / "d.npz", tmp_path / "init.safetensors"
    assert cli.main(["stage-data", "--config", cfg, "--out", str(data)]) == 0
    assert cli.main(["init", "--config", cfg, "--threads", "1", "--data", str(data), "--replicate", "0",
                     "--out", str(init)]) == 0
    out = tmp_path / "run" / "trained.safetensors"
    assert cli.main(["train", "--config", cfg, "--threads", "1", "--data", str(data), "--from", str(init),
                     "--replicate", "0", "--noise", "sibling:1", "--metrics", str(tmp_path / "run" / "m.json"),
                     "--curve", str(tmp_path / "run" / "trained.curve.csv"), "--out", str(out)]) == 0
    curve = pd.read_csv(tmp_path / "run" / "trained.curve.csv")
    assert list(curve.columns) == list(curves.COLUMNS) and list(curve["step"]) == [2, 4, 5]
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.json", "trained.curve.csv", "trained.safetensors"]
    assert "curve" not in json.loads((tmp_path / "run" / "m.json").read_text())  # the rows stay out of the metrics


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
        from lotto.data import DeviceData
        from lotto.staging import stage
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


# --------------------------------------------------------------------------- the parts train() calls, one by one
def test_stepper_trains_at_the_given_rate_and_holds_pruned_weights_at_zero(data):
    """One step: the learning rate it is given, pruned weights exactly zero after it (their gradients masked
    too, so momentum never moves them later), and its state continues a copy bit for bit."""
    torch.set_num_threads(1)
    sched = train.Schedule.from_config(TRAIN_CFG, data.num_train)
    model = fresh(data)
    mask = pruning.global_magnitude(weights(model), 0.7)
    stepper = train.Stepper(model, sched, 0, mask)
    keep = mask.to_torch("cpu")
    assert all(torch.count_nonzero(w[~keep[n]]) == 0 for n, w in weights(model).items())  # masked on set-up
    before = weights(model)
    for step in range(3):
        x, y = data.train_batch(step, sched.batch_size, 11, 12)
        loss, out = stepper.step(x, y, 0.125)
        assert out.shape == (len(y), 10) and loss.ndim == 0
    assert stepper.optimizer.param_groups[0]["lr"] == 0.125
    after = weights(model)
    for name, w in after.items():
        assert torch.count_nonzero(w[~keep[name]]) == 0, name
        assert not torch.equal(w[keep[name]], before[name][keep[name]]), name
    twin = train.Stepper(fresh(data, seed=3), sched, 0, mask)
    twin.load_state(stepper.state())
    for step in range(3, 5):
        x, y = data.train_batch(step, sched.batch_size, 11, 12)
        stepper.step(x, y, 0.05)
        twin.step(x, y, 0.05)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.model.state_dict().values()))


def _logits(correct: int, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of n labels 0 whose logits classify the first ``correct`` of them right."""
    out = torch.zeros(n, 10)
    out[:correct, 0] = 1.0
    out[correct:, 1] = 1.0
    return out, torch.zeros(n, dtype=torch.long)


def test_progress_logs_a_row_per_interval_and_its_state_resumes_a_cut_interval():
    sched = train.Schedule.from_config({**TRAIN_CFG, "batch_size": 4, "warmup_steps": 0, "milestones": []}, 20)
    batches = [(float(i), *_logits(i % 5)) for i in range(1, 8)]  # loss i, i % 5 of 4 right at step i

    def run_steps(progress, steps):
        return [progress.add(i, loss, out, y) for i, (loss, out, y) in zip(steps, [batches[i - 1] for i in steps])]

    lines = []
    whole = train.Progress(sched, 0, 7, lines.append, 3)
    rows = run_steps(whole, range(1, 8))
    assert [r is not None for r in rows] == [False, False, True, False, False, True, True]
    curve = whole.summary()["curve"]
    assert [r["step"] for r in curve] == [3, 6, 7]
    assert curve[0]["loss"] == (1 + 2 + 3) / 3 and curve[0]["accuracy"] == (1 + 2 + 3) / 12
    assert curve[1]["loss"] == (4 + 5 + 6) / 3 and curve[1]["accuracy"] == (4 + 0 + 1) / 12
    assert curve[2]["loss"] == 7 and curve[2]["epoch"] == 7 / 5 and curve[2]["lr"] == 0.05
    assert [ln.split()[1] for ln in lines] == ["3/7", "6/7", "7/7"] and lines[-1].endswith("eta 0s")
    summary = whole.summary()
    assert summary["last_epoch_train_loss_mean"] == 5.0  # steps 3..7: the last epoch of 5 steps
    assert summary["last_epoch_train_loss_std"] == pytest.approx(math.sqrt(2.5))
    # cut at step 4 (inside the interval 4..6), its state through JSON as a resume state carries it
    first = train.Progress(sched, 0, 7, lambda m: None, 3)
    run_steps(first, range(1, 5))
    second = train.Progress(sched, 0, 7, lambda m: None, 3)
    second.load_state(json.loads(json.dumps(first.state())))
    second.begin(4)
    run_steps(second, range(5, 8))
    assert [{k: r[k] for k in NON_TIMING} for r in second.summary()["curve"]] == \
        [{k: r[k] for k in NON_TIMING} for r in curve]
    assert second.summary()["last_epoch_train_loss_mean"] == 5.0


def test_divergence_stops_at_a_non_finite_loss_and_warns_once_about_weights(data):
    lines = []
    watch = train.Divergence(lines.append)
    assert watch.check_loss(0.5, 3) == 0.5
    for bad in (math.nan, math.inf):
        with pytest.raises(FloatingPointError, match=f"training loss became {bad} at step 9"):
            watch.check_loss(bad, 9)
    model = fresh(data)
    watch.check_weights(model, 4, 0.5)
    assert lines == []
    with torch.no_grad():
        model.fc1.weight[0, 0] = 1e7
    watch.check_weights(model, 5, 0.5)
    watch.check_weights(model, 6, 0.5)
    assert len(lines) == 1 and "the largest weight magnitude is 1e+07 at step 5" in lines[0]


def test_resume_saves_on_schedule_and_at_sigterm_and_restores_only_its_own_run(data, tmp_path):
    torch.set_num_threads(1)
    sched = train.Schedule.from_config(TRAIN_CFG, data.num_train)
    path = tmp_path / "state" / "r.pt"
    lines = []
    stepper, progress = train.Stepper(fresh(data), sched, 0), train.Progress(sched, 0, 10, lambda m: None, 100)
    resume = train.Resume(path, 4, "run-a", lines.append)
    for step in range(1, 4):
        resume.after_step(step, 10, False, stepper, progress)
    assert not path.exists()
    resume.after_step(4, 10, False, stepper, progress)
    assert path.is_file() and lines == [f"resume state at step 4 -> {path}"]
    # the state of another run is left alone, a temporary of a killed save is cleaned up
    stale = path.parent / f".{path.name}.x1y2.tmp.pt"
    stale.write_bytes(b"half a state")
    other = train.Resume(path, 4, "run-b", lines.append)
    assert other.restore(train.Stepper(fresh(data), sched, 0), progress, 0, 10) == 0
    assert "belongs to a different run" in lines[-1] and not stale.exists()
    assert resume.restore(train.Stepper(fresh(data), sched, 0), progress, 4, 10) == 4  # step 4 is not inside (4, 10)
    assert "is not inside this run" in lines[-1]
    twin = train.Stepper(fresh(data, seed=5), sched, 0)
    assert resume.restore(twin, train.Progress(sched, 0, 10, lambda m: None, 100), 0, 10) == 4
    assert lines[-1] == f"resumed from step 4 ({path})"
    assert all(torch.equal(a, b) for a, b in zip(stepper.model.state_dict().values(),
                                                  twin.model.state_dict().values()))
    # SIGTERM at step 5: this step is saved, then Interrupted
    with pytest.raises(train.Interrupted, match="stopped by SIGTERM at step 5"):
        resume.after_step(5, 10, True, stepper, progress)
    assert torch.load(path, weights_only=True)["step"] == 5
    # no path: nothing saved, SIGTERM left alone
    assert not train.Resume(None, 4, "", lines.append).active


def test_sigterm_flag_records_sigterm_in_the_main_thread_only():
    import os
    import signal
    import threading
    import time

    previous = signal.getsignal(signal.SIGTERM)
    with train.SigtermFlag(True) as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not flag.received and time.monotonic() < deadline:
            time.sleep(0.01)
        assert flag.received
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is the run's only
    assert not train.SigtermFlag(False).active
    found = []
    worker = threading.Thread(target=lambda: found.append(train.SigtermFlag(True).active))
    worker.start()
    worker.join()
    assert found == [False]  # handlers can only be set from the main thread
