import pytest
import torch
import torch.nn as nn

from lotto.architectures import CATALOG, Architecture, model_names, register
from lotto.models import build_model, prunable_names


def build(name, in_channels=3, num_classes=10, image_size=32, seed=0, bn_init="default"):
    return build_model({"name": name, "bn_init": bn_init}, in_channels, num_classes, image_size, seed)


def n_params(model, names=None):
    params = dict(model.named_parameters())
    keys = params if names is None else names
    return sum(params[k].numel() for k in keys)


@pytest.fixture(scope="module")
def resnet20():
    return build("resnet20")


# --------------------------------------------------------------------------- registry
def test_registry_names():
    assert model_names() == sorted(["resnet20", "lenet", "alexnet", "vgg11", "resnet18"]) == sorted(CATALOG)


def test_the_catalog_imports_no_torch_and_builders_load_lazily():
    import subprocess
    import sys

    code = ("import sys\n"
            "from lotto.architectures import CATALOG\n"
            "assert 'torch' not in sys.modules and 'lotto.models' not in sys.modules\n"
            "assert CATALOG['alexnet'].min_image_size == 63 and CATALOG['lenet'].input_problem(9)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_new_model_is_one_catalog_entry(tmp_path, monkeypatch):
    """A builder in any importable module plus one Architecture: the config accepts the name, refuses images it
    cannot take at parse time (the builder still unimported), and build_model builds it."""
    import sys

    from lotto import config

    (tmp_path / "toynets.py").write_text(
        "import torch.nn as nn\n"
        "def build(in_channels, num_classes, image_size):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    register(Architecture("toy_linear", "toynets:build", 12, (3,), "one linear layer on RGB images"))
    try:
        cfg = {"experiment": "toy", "model": {"name": "toy_linear"},
               "data": {"dataset": "mnist_embedded", "source": "embedded", "train_size": 256, "test_size": 128},
               "training": {"epochs": 1, "milestones": [], "batch_size": 64},
               "composability": {"pretrain_steps": [0], "ks": [2], "sparsities": [0.5]}}
        with pytest.raises(config.ConfigError) as exc:
            config.validate(cfg)
        assert ("config key 'model.name': toy_linear takes images of 3 channels, but the images of the main task "
                "have 1 channel(s) (mnist_embedded's own; data.channels is not set); valid: data.channels: 3") \
            in str(exc.value)
        cfg["data"]["channels"] = 3
        assert config.validate(cfg)["model"]["name"] == "toy_linear"
        assert "toynets" not in sys.modules  # parse time knows the model without importing its builder
        m = build_model({"name": "toy_linear"}, 3, 10, 12, 0)
        assert prunable_names(m) == ["1.weight"]
        with pytest.raises(ValueError, match="toy_linear takes images of 3 channels"):
            build_model({"name": "toy_linear"}, 1, 10, 12, 0)
    finally:
        CATALOG.pop("toy_linear", None)


def test_unknown_model_names_key_and_valid_names():
    with pytest.raises(ValueError) as exc:
        build("resnet21")
    msg = str(exc.value)
    assert "model.name" in msg and "resnet21" in msg
    for name in model_names():
        assert name in msg


def test_bad_bn_init():
    with pytest.raises(ValueError, match="model.bn_init"):
        build("lenet", bn_init="zeros")


@pytest.mark.parametrize(
    "args",
    [(0, 10, 32, 0), (3, 0, 32, 0), (3, 10, 0, 0), (3, 10, 32, -1), (3, 10, 32, 1.5)],
)
def test_bad_arguments(args):
    with pytest.raises(ValueError):
        build_model({"name": "lenet"}, *args)


# --------------------------------------------------------------------------- resnet20
def test_resnet20_parameter_counts(resnet20):
    assert n_params(resnet20) == 272_474
    assert n_params(resnet20, prunable_names(resnet20)) == 270_896


def test_resnet20_prunable_names(resnet20):
    names = prunable_names(resnet20)
    expected = ["conv.weight"]
    for i in range(9):
        expected += [f"blocks.{i}.conv1.weight", f"blocks.{i}.conv2.weight"]
        if i in (3, 6):
            expected.append(f"blocks.{i}.shortcut.0.weight")
    expected.append("fc.weight")
    assert names == expected
    sd = resnet20.state_dict()
    assert all(n in sd for n in names)
    assert not any(n.endswith("bias") for n in names)
    assert not any("bn" in n or "shortcut.1" in n for n in names)


def test_resnet20_structure(resnet20):
    convs = [m for m in resnet20.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 + 2  # 19 3x3 convs + 2 shortcut 1x1 convs
    assert all(m.bias is None for m in convs)
    assert resnet20.conv.kernel_size == (3, 3) and resnet20.conv.stride == (1, 1)
    widths = [b.conv2.out_channels for b in resnet20.blocks]
    assert widths == [16] * 3 + [32] * 3 + [64] * 3
    strides = [b.conv1.stride[0] for b in resnet20.blocks]
    assert strides == [1, 1, 1, 2, 1, 1, 2, 1, 1]
    sc = resnet20.blocks[3].shortcut[0]
    assert sc.kernel_size == (1, 1) and sc.stride == (2, 2)
    assert len(resnet20.blocks[1].shortcut) == 0
    assert resnet20.fc.in_features == 64 and resnet20.fc.bias is not None


def test_resnet20_forward_shapes(resnet20):
    resnet20.eval()
    with torch.no_grad():
        assert resnet20(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert resnet20(torch.randn(2, 3, 28, 28)).shape == (2, 10)
    m = build("resnet20", in_channels=1, num_classes=7, image_size=28)
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 7)


def test_resnet20_channels_last(resnet20):
    resnet20.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = resnet20(x)
        m = build("resnet20").to(memory_format=torch.channels_last).eval()
        out = m(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- lenet
def test_lenet_28x28x1():
    m = build("lenet", in_channels=1, image_size=28)
    assert m.fc1.in_features == 400
    assert [tuple(m.get_parameter(n).shape) for n in prunable_names(m)] == [
        (6, 1, 3, 3),
        (16, 6, 3, 3),
        (120, 400),
        (84, 120),
        (10, 84),
    ]
    assert prunable_names(m) == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"]
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_lenet_32x32x3():
    m = build("lenet", in_channels=3, image_size=32)
    assert m.conv1.in_channels == 3
    assert m.fc1.in_features == 16 * 6 * 6
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# --------------------------------------------------------------------------- zoo
@pytest.mark.parametrize(
    "name,in_channels,image_size",
    [
        ("resnet18", 3, 32),
        ("resnet18", 1, 28),
        ("vgg11", 3, 32),
        ("vgg11", 1, 28),
        ("alexnet", 3, 64),
        ("alexnet", 1, 63),
    ],
)
def test_zoo_forward(name, in_channels, image_size):
    m = build(name, in_channels=in_channels, num_classes=10, image_size=image_size).eval()
    with torch.no_grad():
        out = m(torch.randn(2, in_channels, image_size, image_size))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    first = m.get_parameter(prunable_names(m)[0])
    assert first.shape[1] == in_channels


@pytest.mark.parametrize("name", ["alexnet", "lenet"])
def test_minimum_image_size(name):
    lo = CATALOG[name].min_image_size
    with pytest.raises(ValueError, match=f"needs images of at least {lo}x{lo} pixels"):
        build(name, image_size=lo - 1)
    # The minimum itself builds (meta-device shape check inside build_model).
    build(name, image_size=lo)


def test_zoo_prunable_names():
    m = build("resnet18")
    names = prunable_names(m)
    assert names[0] == "conv1.weight" and names[-1] == "fc.weight"
    assert "layer2.0.downsample.0.weight" in names
    assert len(names) == 1 + 16 + 3 + 1
    params = dict(m.named_parameters())
    assert all(params[n].dim() in (2, 4) for n in names)
    assert not any(n.endswith("bias") or ".bn" in n for n in names)


# --------------------------------------------------------------------------- init
@pytest.mark.parametrize("name", ["resnet20", "lenet"])
def test_init_determinism(name):
    a = build(name, seed=123).state_dict()
    b = build(name, seed=123).state_dict()
    c = build(name, seed=124).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for n in prunable_names(build(name)):
        assert not torch.equal(a[n], c[n])


def test_init_does_not_touch_global_rng():
    torch.manual_seed(7)
    expected = torch.rand(5)
    torch.manual_seed(7)
    build("lenet", seed=99)
    assert torch.equal(torch.rand(5), expected)


def test_init_is_independent_of_global_rng():
    torch.manual_seed(1)
    a = build("lenet", seed=5).state_dict()
    torch.manual_seed(2)
    b = build("lenet", seed=5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_kaiming_normal_statistics(resnet20):
    # kaiming_normal_ (fan_in, gain sqrt 2): std = sqrt(2 / fan_in)
    w = resnet20.blocks[8].conv2.weight.detach()
    fan_in = w[0].numel()
    assert abs(w.std().item() / (2 / fan_in) ** 0.5 - 1) < 0.05
    assert abs(w.mean().item()) < 0.01


def test_default_bias_init():
    m = build("lenet", image_size=28, in_channels=1)
    bound = 1 / m.fc1.in_features**0.5
    b = m.fc1.bias.detach()
    assert b.abs().max() <= bound and b.abs().max() > 0


def test_bn_init_default(resnet20):
    for mod in resnet20.modules():
        if isinstance(mod, nn.BatchNorm2d):
            assert torch.equal(mod.weight, torch.ones_like(mod.weight))
            assert torch.equal(mod.bias, torch.zeros_like(mod.bias))
            assert torch.equal(mod.running_mean, torch.zeros_like(mod.running_mean))
            assert torch.equal(mod.running_var, torch.ones_like(mod.running_var))


def test_bn_init_uniform():
    m = build("resnet20", bn_init="uniform")
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert len(bns) == 19 + 2
    gammas = torch.cat([bn.weight.detach() for bn in bns])
    assert (gammas >= 0).all() and (gammas < 1).all()
    assert not torch.equal(gammas, torch.ones_like(gammas))
    assert gammas.std() > 0.1
    assert all(torch.equal(bn.bias, torch.zeros_like(bn.bias)) for bn in bns)
    # conv weights are the same draw only if BN sampling came after them; not required,
    # but the result must be deterministic:
    m2 = build("resnet20", bn_init="uniform")
    assert all(torch.equal(x, y) for x, y in zip(m.state_dict().values(), m2.state_dict().values()))


def test_model_is_on_cpu_in_training_mode(resnet20):
    m = build("lenet")
    assert m.training
    assert all(p.device.type == "cpu" for p in m.parameters())
    assert all(b.device.type == "cpu" for b in m.buffers())
