"""The one table of readable names: what figures, the report and the claims table call lotto's ids.

``display(kind, id)`` turns an id of a config, a path or a record (``l1_unstructured``, ``rewind_init``,
``mnist_embedded``, ``vote2``) into the name a reader sees (``layerwise L1``, ``rewind to init``,
``MNIST (5,000 digits)``, ``vote: kept by ≥ 2 of k``). Plain Unicode, no markup: the same text goes into
matplotlib, HTML and a terminal.
An id the table does not know comes back unchanged, so a newly registered method still shows (by its id)
until someone adds its name here; ``tests/test_names.py`` checks that every registered method, handling,
model and data set has one.

Import-light (no torch, no pandas): the Snakefile, the report and the figure commands all read it.
"""

from __future__ import annotations

import re

#: kind -> id -> readable name
NAMES: dict[str, dict[str, str]] = {
    # pruning methods (lotto/pruning.py METHODS); "layerwise" = each layer pruned by the same fraction
    "method": {
        "global_l1": "global L1",
        "l1_unstructured": "layerwise L1",
        "random_unstructured": "random",
        "l1_structured": "L1 structured",
        "l2_structured": "L2 structured",
        "linf_structured": "L∞ structured",
        "random_structured": "random structured",
        "hybrid": "hybrid (L1 structured conv, L1 fc)",
        "fc_only": "fc layers only (L1)",
    },
    "model": {
        "resnet20": "ResNet-20",
        "lenet": "LeNet",
        "alexnet": "AlexNet",
        "vgg11": "VGG-11",
        "resnet18": "ResNet-18",
    },
    "dataset": {
        "mnist_embedded": "MNIST (5,000 digits)",
        "mnist": "MNIST",
        "fashion_mnist": "Fashion-MNIST",
        "kmnist": "Kuzushiji-MNIST",
        "emnist": "EMNIST (balanced)",
        "cifar10": "CIFAR-10",
        "cifar100": "CIFAR-100",
        "svhn": "SVHN",
    },
}

#: the kinds a family's spec adds its own names for (lotto.family.Family.names: tickets, handlings, chains...)
FAMILY_KINDS = ("ticket", "handling", "chain")
KINDS = tuple(NAMES) + FAMILY_KINDS + ("family", "task")


def _names(kind: str) -> dict[str, str]:
    """The id -> name table of a kind: lotto's own, or what the registered families bring."""
    if kind in NAMES:
        return NAMES[kind]
    from lotto.families import FAMILIES

    if kind == "family":
        return {name: f.display for name, f in FAMILIES.items()}
    out: dict[str, str] = {}
    for f in FAMILIES.values():
        out.update(f.names.get(kind, {}))
    return out

_VOTE = re.compile(r"vote([1-9]\d*)")


def display(kind: str, id, tasks: dict | None = None) -> str:
    """The readable name of ``id`` (a method, handling, model, dataset, ticket, chain, family or task).

    ``vote<m>`` reads "vote: kept by ≥ m of k"; ``bespoke_<task>`` "bespoke for <task>". A ``task`` is a zoo task
    name: the data set's name when it is a data set id, or when ``tasks`` (task name -> data set id, the run's
    config) says which data set it is; else the name itself. Unknown ids come back as given (as text).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind of name {kind!r}; known: {', '.join(KINDS)}")
    text = str(id)
    if kind == "task":
        dataset = (tasks or {}).get(text, text)
        return NAMES["dataset"].get(dataset, text)
    if kind == "ticket":
        m = _VOTE.fullmatch(text)
        if m:
            return f"vote: kept by ≥ {m.group(1)} of k"
        if text.startswith("bespoke_"):
            return f"bespoke for {display('task', text[len('bespoke_'):], tasks)}"
    return _names(kind).get(text, text)


def figure_context(config: dict) -> dict:
    """What a run's figures need besides their tables (each figure command's ``--context``): the ids of its
    model, data set and experiment, the page sizes of its ``figures`` section (lotto.figures), and what each
    family of the config adds (its spec's ``context``: e.g. the data set of each of its tasks)."""
    from lotto.families import FAMILIES

    context = {"model": config["model"]["name"], "dataset": config["data"]["dataset"],
               "experiment": config["experiment"], "figure": dict(config.get("figures") or {})}
    for name, family in FAMILIES.items():  # what a family's figures need besides (e.g. its tasks' data sets)
        if config.get(name):
            context.update(family.figure_context(config))
    return context
