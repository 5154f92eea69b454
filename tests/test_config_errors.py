"""A battery of broken configs (issue 11): each one refused at parse time, before any job, naming the key.

Most cases run through ``lotto.config.validate`` (milliseconds each); a handful run through the real
``snakemake -n`` to show that the Snakefile refuses them before any job (exit != 0, the key on stderr,
nothing under results/).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lotto import config as C
from lotto import datasets
from workflow_helpers import ROOT, job_counts, make_workdir, snakemake

NAN, INF = math.nan, math.inf


def tiny():
    """mnist_embedded, train_size 512, batch 64, 2 epochs: 8 steps/epoch, a 16-step schedule."""
    return yaml.safe_load((ROOT / "workflow/configs/tiny.yaml").read_text())


def imp():
    """imp-tiny.yaml: the same 512 images, 4 epochs: a 32-step schedule."""
    return yaml.safe_load((ROOT / "workflow/configs/imp-tiny.yaml").read_text())


def zoo():
    """tiny plus a zoo on a second (torchvision) task; no data is read while validating."""
    cfg = tiny()
    cfg["zoo"] = {"methods": ["global_l1"], "handlings": ["rewind_init", "rewind_t", "finetune"],
                  "rewind_step": 4, "finetune_start": 2, "iterations": 2,
                  "tasks": [{"name": "digits", "dataset": "mnist", "train_size": 512, "test_size": 256}]}
    return cfg


BASES = {"tiny": tiny, "imp": imp, "zoo": zoo}


def at(cfg, dotted, value):
    """Set ``dotted`` (a.b[0].c) in ``cfg``; returns cfg."""
    parts = []
    for piece in dotted.split("."):
        name, _, rest = piece.partition("[")
        parts.append(name)
        if rest:
            parts += [int(i) for i in rest.rstrip("]").split("][")]
    node = cfg
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = value
    return cfg


def drop(cfg, dotted):
    *parents, last = dotted.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    del node[last]
    return cfg


def also(*edits):
    def edit(cfg):
        for e in edits:
            e(cfg)
        return cfg
    return edit


def put(dotted, value):
    return lambda cfg: at(cfg, dotted, value)


# (id, base, edit, key the error must name, further words it must contain)
CASES = [
    # --- NaN / infinity: JSON-schema range checks are false for NaN, so the schema alone lets them through
    ("lr-nan", "tiny", put("training.lr", NAN), "training.lr", ["not a finite number"]),
    ("lr-inf", "tiny", put("training.lr", INF), "training.lr", ["not a finite number"]),
    ("momentum-minus-inf", "tiny", put("training.momentum", -INF), "training.momentum", ["finite"]),
    ("epochs-nan", "tiny", put("training.epochs", NAN), "training.epochs", ["finite"]),
    ("sparsity-nan-in-list", "tiny", put("composability.sparsities", [0.5, NAN]), "composability.sparsities[1]",
     ["finite"]),
    ("milestone-inf", "tiny", put("training.milestones", [INF]), "training.milestones[0]", ["finite"]),
    ("weight-decay-nan-string", "tiny", put("training.weight_decay", ".nan"), "training.weight_decay", ["finite"]),
    ("imp-prune-fraction-nan", "imp", put("imp.prune_fraction", NAN), "imp.prune_fraction", ["finite"]),
    # --- the schedule: rewind points, milestones, length
    ("rewind-at-end", "tiny", put("composability.pretrain_steps", [0, 16]), "composability.pretrain_steps[1]",
     ["16 steps", "valid: 0..15"]),
    ("rewind-far-beyond", "tiny", put("composability.pretrain_steps", [100000]), "composability.pretrain_steps[0]",
     ["end of the schedule"]),
    ("imp-rewind-beyond", "imp", put("imp.pretrain_steps", [0, 40]), "imp.pretrain_steps[1]", ["32 steps"]),
    ("zoo-rewind-beyond", "zoo", put("zoo.rewind_step", 16), "zoo.rewind_step", ["end of the schedule"]),
    ("zoo-rewind-beyond-a-task", "zoo", put("zoo.tasks[0].train_size", 64), "zoo.rewind_step",
     ["zoo task 'digits'", "valid: 0..1"]),
    ("zoo-finetune-start-beyond", "zoo", put("zoo.finetune_start", 20), "zoo.finetune_start", ["16 steps"]),
    ("milestone-beyond-epochs", "tiny", put("training.milestones", [1, 3]), "training.milestones[1]",
     ["training.epochs = 2"]),
    ("milestone-at-epochs", "tiny", put("training.milestones", [2]), "training.milestones[0]", ["never drop"]),
    ("schedule-of-0-steps", "tiny", also(put("training.epochs", 0.01), put("training.milestones", [])),
     "training.epochs", ["0 steps", "at least 0.125"]),
    ("0-steps-one-batch", "tiny", also(put("training.epochs", 0.4), put("training.batch_size", 512),
                                       put("training.milestones", [])), "training.epochs", ["0 steps"]),
    # --- sizes against the data set (lotto.datasets)
    ("train-size-beyond-dataset", "tiny", put("data.train_size", 5000), "data.train_size", ["4,000", "1..4000"]),
    ("train-size-beyond-after-validation", "tiny", also(put("data.train_size", 3700),
                                                        put("data.validation_fraction", 0.1)),
     "data.train_size", ["validation_fraction", "1..3600"]),
    ("test-size-beyond-dataset", "tiny", put("data.test_size", 2000), "data.test_size", ["1..1000"]),
    ("test-size-beyond-validation-split", "tiny", also(put("data.test_size", 500),
                                                       put("data.validation_fraction", 0.1)),
     "data.test_size", ["validation split", "1..400"]),
    ("cifar10-train-size", "tiny", also(put("data.dataset", "cifar10"), put("data.source", "torchvision"),
                                        put("data.train_size", 60000)), "data.train_size", ["50,000"]),
    ("batch-larger-than-train-set", "tiny", put("training.batch_size", 1024), "training.batch_size",
     ["1..512"]),
    ("zoo-task-train-size", "zoo", put("zoo.tasks[0].train_size", 70000), "zoo.tasks[0].train_size", ["60,000"]),
    ("zoo-task-test-size", "zoo", put("zoo.tasks[0].test_size", 20000), "zoo.tasks[0].test_size", ["10,000"]),
    ("batch-larger-than-zoo-task", "zoo", also(put("zoo.tasks[0].train_size", 32), put("zoo.rewind_step", 0),
                                               put("zoo.handlings", ["finetune"]), put("zoo.finetune_start", 0)),
     "training.batch_size", ["zoo task 'digits'", "1..32"]),
    # --- paths
    ("local-path-missing", "tiny", also(put("data.dataset", "mnist"), put("data.source", "local"),
                                        put("data.path", "no/such/dir")), "data.path", ["does not exist"]),
    ("zoo-task-local-path-missing", "zoo", also(put("zoo.tasks[0].source", "local"),
                                                put("zoo.tasks[0].path", "no/such.npz")),
     "zoo.tasks[0].path", ["does not exist"]),
    # --- types and ranges (the schema)
    ("lr-not-a-number", "tiny", put("training.lr", "fast"), "training.lr", ["number"]),
    ("batch-size-not-an-integer", "tiny", put("training.batch_size", 12.5), "training.batch_size", ["integer"]),
    ("batch-size-garbage-string", "tiny", put("training.batch_size", "64x"), "training.batch_size", ["integer"]),
    ("epochs-negative", "tiny", put("training.epochs", -1), "training.epochs", ["> 0"]),
    ("lr-zero", "tiny", put("training.lr", 0), "training.lr", ["> 0"]),
    ("momentum-above-1", "tiny", put("training.momentum", 1.5), "training.momentum", ["<= 1"]),
    ("nesterov-not-boolean", "tiny", put("training.nesterov", "maybe"), "training.nesterov", ["true or false"]),
    ("validation-fraction-1", "tiny", put("data.validation_fraction", 1.0), "data.validation_fraction", ["< 1"]),
    ("sparsity-1", "tiny", put("composability.sparsities", [0.5, 1.2]), "composability.sparsities[1]", []),
    ("experiment-name-with-space", "tiny", put("experiment", "my run"), "experiment", []),
    # --- choices, unknown and missing keys
    ("model-unknown", "tiny", put("model.name", "resnet9000"), "model.name", ["'lenet'"]),
    ("dataset-unknown", "tiny", put("data.dataset", "imagenet"), "data.dataset", ["'cifar10'"]),
    ("source-unknown", "tiny", put("data.source", "s3"), "data.source", ["'local'"]),
    ("precision-unknown", "tiny", put("training.precision", "fp64"), "training.precision", ["'bf16'"]),
    ("training-key-misspelt", "tiny", put("training.learning_rate", 0.1), "training.learning_rate",
     ["unknown config key", "lr"]),
    ("section-misspelt", "tiny", put("trainig", {"lr": 0.1}), "trainig", ["unknown config key"]),
    ("model-missing", "tiny", lambda c: drop(c, "model"), "model", ["missing config key"]),
    ("no-experiment-family", "tiny", lambda c: drop(c, "composability"), "composability", ["names no experiment"]),
    # --- consistency between keys
    ("embedded-source-wrong-dataset", "tiny", put("data.dataset", "mnist"), "data.source", ["mnist_embedded"]),
    ("ks-without-2", "tiny", put("composability.ks", [3]), "composability.ks", ["must include 2"]),
    ("sparsity-5-decimals", "tiny", put("composability.sparsities", [0.12345]), "composability.sparsities[0]",
     ["4 decimals"]),
    ("baseline-sibling-beyond-ks", "tiny", put("composability.baseline_sibling", 5),
     "composability.baseline_sibling", []),
    ("milestones-decreasing", "tiny", put("training.milestones", [1.5, 1]), "training.milestones",
     ["increasing"]),
    ("zoo-task-classes-differ", "zoo", put("zoo.tasks[0].dataset", "cifar100"), "zoo.tasks[0].dataset",
     ["100 classes"]),
    ("imp-slice-level-beyond", "imp", put("imp.slice.levels", [2]), "imp.slice.levels[0]", []),
    # --- the model against the images (lotto.architectures: its smallest input, the dataset's own size)
    ("model-images-too-small", "tiny", put("model.name", "alexnet"), "model.name",
     ["alexnet needs images of at least 63x63 pixels", "28x28 pixels (mnist_embedded's own size",
      "valid: data.image_size >= 63", "or a model that takes them: lenet, resnet18, resnet20, vgg11"]),
    ("model-image-size-too-small", "tiny", also(put("model.name", "alexnet"), put("data.image_size", 32)),
     "data.image_size", ["at least 63x63", "are 32x32 pixels (data.image_size)"]),
    ("lenet-image-size-too-small", "tiny", put("data.image_size", 9), "data.image_size",
     ["lenet needs images of at least 10x10", "or a model that takes them: resnet18, resnet20, vgg11"]),
    ("zoo-task-images-too-small", "zoo", put("model.name", "alexnet"), "model.name",
     ["the images of the main task", "the images of zoo task 'digits'"]),
]


def test_the_bases_are_valid():
    for name, make in BASES.items():
        C.validate(make())


def test_the_battery_is_large_and_distinct():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name, base, edit, key, words", CASES, ids=[c[0] for c in CASES])
def test_broken_config_refused_naming_the_key(name, base, edit, key, words):
    cfg = edit(BASES[base]())
    with pytest.raises(C.ConfigError) as err:
        C.validate(cfg)
    msg = str(err.value)
    assert f"'{key}'" in msg, msg
    for w in words:
        assert w in msg, msg


# --- config files: duplicate keys, syntax errors, empty files ---------------------------------------------


GOOD = (ROOT / "workflow/configs/tiny.yaml").read_text()

FILE_CASES = [
    ("duplicate-section", GOOD + "training:\n  lr: 0.5\n", ["duplicate key 'training'", "first given at line"]),
    ("duplicate-nested-key", GOOD.replace("model:\n", "model:\n  name: resnet20\n", 1),
     ["duplicate key 'model.name'"]),
    ("syntax-unclosed-bracket", GOOD.replace("ks: [2, 3]", "ks: [2, 3"), ["not valid YAML", ", line "]),
    ("syntax-tab-indent", GOOD.replace("  lr:", "\tlr:", 1), ["not valid YAML", ", line "]),
    ("empty-file", "", ["line 1", "empty"]),
    ("only-comments", "# todo\n", ["line 1", "empty"]),
    ("top-level-list", "- experiment: x\n", ["line 1", "mapping"]),
]


@pytest.mark.parametrize("name, text, words", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_broken_config_file_named_with_line(tmp_path, monkeypatch, name, text, words):
    monkeypatch.chdir(tmp_path)
    Path("broken.yaml").write_text(text)
    with pytest.raises(C.ConfigError) as err:
        C.load("broken.yaml")
    msg = str(err.value)
    assert msg.startswith("config file broken.yaml"), msg
    for w in words:
        assert w in msg, msg


def test_duplicate_key_names_both_lines(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("experiment: a\nmodel:\n  name: lenet\n  bn_init: default\n  name: resnet20\n")
    with pytest.raises(C.ConfigError, match=r"dup\.yaml, line 5: duplicate key 'model\.name' \(first given at line 3\)"):
        C.read_config_file(f)


def test_duplicate_key_in_json(tmp_path):
    with pytest.raises(C.ConfigError, match="inline config: duplicate key 'experiment'"):
        C.load('{"experiment": "a", "experiment": "b"}', partial=True)
    f = tmp_path / "tabs.json"  # JSON that PyYAML cannot read (tab indentation) still gets the duplicate check
    f.write_text('{\n\t"experiment": "a",\n\t"experiment": "b"\n}\n')
    with pytest.raises(C.ConfigError, match="tabs.json: duplicate key 'experiment'"):
        C.read_config_file(f)


def test_dotted_override_into_a_value_refused():
    cfg = tiny()
    cfg["experiment.name"] = "x"
    with pytest.raises(C.ConfigError, match="'experiment.name'"):
        C.validate_workflow(cfg)


def test_local_data_of_unknown_size_is_not_guessed(tmp_path, monkeypatch):
    """A local .npz may hold any number of images: nothing is said about sizes until staging reads it. A
    directory (torchvision layout or idx files) holds the full set: the catalog's sizes apply."""
    monkeypatch.chdir(tmp_path)
    Path("mine.npz").write_bytes(b"")
    cfg = also(put("data.dataset", "mnist"), put("data.source", "local"), put("data.path", "mine.npz"),
               put("data.train_size", None), put("training.batch_size", 100000))(tiny())
    C.validate(cfg)
    Path("tv").mkdir()
    cfg = also(put("data.path", "tv"), put("data.train_size", 70000))(cfg)
    with pytest.raises(C.ConfigError, match=r"'data\.train_size': 70,000 is larger"):
        C.validate(cfg)


def test_checks_across_sections_are_for_whole_configs():
    """Jobs get single sections with the defaults filled in (milestones [80, 120] with epochs 2, say): only the
    whole config, checked at parse time, knows what the user wrote and which data set the schedule runs on."""
    C.validate({"training": {"epochs": 2, "milestones": [80, 120]}}, partial=True)
    cfg = tiny()
    del cfg["training"]["milestones"]  # the defaults go with the default 160 epochs: not the user's mistake
    assert C.validate(cfg)["training"]["milestones"] == [80, 120]


# --- accepted: number-like strings, overrides ---------------------------------------------------------------


def test_exponent_floats_are_numbers(tmp_path):
    for line in ("lr: 1e-3", 'lr: "1e-3"', "lr: 1.0e-3", "lr: 1E-3"):
        f = tmp_path / "c.yaml"
        f.write_text(GOOD.replace("lr: 0.05", line))
        assert C.load(f)["training"]["lr"] == 0.001, line
    # Snakemake (YAML 1.1) hands the Snakefile the string: it is read as the number it spells
    cfg = tiny()
    cfg["training"].update(lr="1e-3", batch_size="32", epochs="2", milestones=["1.5"], augment="false")
    tr = C.validate(cfg)["training"]
    assert (tr["lr"], tr["batch_size"], tr["epochs"], tr["milestones"], tr["augment"]) == (0.001, 32, 2, [1.5], False)
    # integral floats become ints where an integer is wanted (they name result paths: pre500, not pre500.0)
    cfg = tiny()
    cfg["composability"]["pretrain_steps"] = [0.0, 4.0]
    assert C.validate(cfg)["composability"]["pretrain_steps"] == [0, 4]
    assert all(type(t) is int for t in C.validate(cfg)["composability"]["pretrain_steps"])


def test_dotted_overrides_fold_into_sections():
    cfg = tiny()
    cfg["training.epochs"] = 3
    cfg["composability.pretrain_steps"] = [0, 20]  # fits a 3-epoch schedule (24 steps), not a 2-epoch one
    out = C.validate_workflow(cfg, overrides={"training.epochs": 3})
    assert out["training"]["epochs"] == 3 and out["composability"]["pretrain_steps"] == [0, 20]
    cfg = tiny()
    cfg["training.lr"] = -1
    with pytest.raises(C.ConfigError, match=r"'training\.lr'.*\n.*--config: training\.lr=-1"):
        C.validate_workflow(cfg, overrides={"training.lr": -1})


# --- the data set catalog -------------------------------------------------------------------------------


def test_catalog_covers_exactly_the_schema_datasets():
    props = C.load_schema()["properties"]
    assert props["data"]["properties"]["dataset"]["enum"] == list(datasets.CATALOG)
    assert props["zoo"]["properties"]["tasks"]["items"]["properties"]["dataset"]["enum"] == list(datasets.CATALOG)
    for name, d in datasets.CATALOG.items():
        assert d.name == name and d.train > d.test > 0 and d.channels in (1, 3) and d.image_size in (28, 32)


def test_config_and_data_share_the_catalog():
    from lotto import staging

    assert staging.NUM_CLASSES is datasets.NUM_CLASSES
    assert "_ZOO_CLASSES" not in vars(C)


@pytest.mark.parametrize("fraction", [0.1, 1 / 3])
def test_validation_carving_matches_staging(tmp_path, fraction):
    from lotto.data import DeviceData
    from lotto.staging import stage

    stage({"dataset": "mnist_embedded", "source": "embedded", "validation_fraction": fraction}, tmp_path / "d.npz")
    d = DeviceData.load(tmp_path / "d.npz")
    n = datasets.CATALOG["mnist_embedded"].train
    assert (d.num_train, len(d.y_test)) == (n - datasets.validation_count(n, fraction),
                                            datasets.validation_count(n, fraction))


def test_schedule_length_matches_the_trainer():
    from lotto.train import Schedule

    tr = C.validate(tiny())["training"]
    for n, bs, epochs in [(512, 64, 2), (500, 64, 2.5), (4000, 128, 0.01), (100, 1000, 1)]:
        s = Schedule.from_config({**tr, "batch_size": bs, "epochs": epochs}, n)
        assert C.schedule_steps(n, bs, epochs) == (s.steps_per_epoch, s.total_steps)


def test_importing_config_imports_no_torch():
    code = "import sys, lotto.config, lotto.datasets; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- through the real Snakefile: refused before any job ------------------------------------------------------


def _write(work: Path, name: str, cfg: dict) -> str:
    (work / name).write_text(yaml.safe_dump(cfg))
    return name


def _refused(work: Path, args: list[str], *words: str):
    proc = snakemake(["-n", *args], cwd=work, check=False)
    err = proc.stderr + proc.stdout
    assert proc.returncode != 0, err
    for w in words:
        assert w in err, err
    assert not (work / "results").exists()
    return err


def test_snakemake_refuses_broken_configs_before_any_job(tmp_path):
    work = make_workdir(tmp_path)
    _refused(work, ["--configfile", _write(work, "nan.yaml", put("training.lr", NAN)(tiny()))], "'training.lr'")
    bad = put("composability.pretrain_steps", [0, 16])(tiny())
    _refused(work, ["--configfile", _write(work, "rewind.yaml", bad)], "'composability.pretrain_steps[1]'")
    bad = also(put("data.dataset", "mnist"), put("data.source", "local"), put("data.path", "data/mnist"))(tiny())
    _refused(work, ["--configfile", _write(work, "path.yaml", bad)], "'data.path'", "does not exist")
    (work / "dup.yaml").write_text(GOOD + "training:\n  lr: 0.5\n")
    _refused(work, ["--configfile", "dup.yaml"], "config file dup.yaml, line", "duplicate key 'training'")
    # the default config.yaml is read by lotto before Snakemake: a syntax error is named with its line
    (work / "config.yaml").write_text(GOOD.replace("ks: [2, 3]", "ks: [2, 3"))
    _refused(work, [], "config file config.yaml, line")
    # a --configfile Snakemake would read first (naming neither file nor line): lotto's workflow profile checks it
    (work / "syntax.yaml").write_text(GOOD.replace("ks: [2, 3]", "ks: [2, 3"))
    _refused(work, ["--configfile", "syntax.yaml"], "config file syntax.yaml, line", "not valid YAML")
    (work / "empty.yaml").write_text("# nothing yet\n")
    _refused(work, ["--configfile", "empty.yaml"], "config file empty.yaml, line 1", "empty")
    # a model the images are too small for: refused at parse time, naming the key, the file and what is valid
    _refused(work, ["--configfile", _write(work, "alexnet.yaml", put("model.name", "alexnet")(tiny()))],
             "config key 'model.name': alexnet needs images of at least 63x63 pixels", "valid: data.image_size >= 63",
             "(config file alexnet.yaml)")


def test_snakemake_config_overrides_are_applied_and_validated(tmp_path):
    work = make_workdir(tmp_path)
    # a rewind point at step 20 fits 3 epochs (24 steps) but not the file's 2 (16): the override is applied
    cfg = _write(work, "c.yaml", also(put("composability.pretrain_steps", [0, 20]),
                                      put("training.lr", "1e-3"))(tiny()))
    _refused(work, ["--configfile", cfg], "'composability.pretrain_steps[1]'")
    # Snakemake 9's --config refuses dotted keys itself; lotto says which nested form does reach the config
    _refused(work, ["--configfile", cfg, "--config", "training.epochs=3"], "--config 'training={epochs: 3}'")
    out = snakemake(["-n", "--configfile", cfg, "--config", "training={epochs: 3}"], cwd=work).stdout
    assert job_counts(out)["pretrain"] == 2
    _refused(work, ["--configfile", cfg, "--config", "training={lr: -1}"], "'training.lr'", "--config")
