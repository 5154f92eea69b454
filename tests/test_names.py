"""The one display-name table (lotto/names.py): every registered id has a readable name."""

import pytest

from lotto import names
from lotto.datasets import CATALOG
from lotto.architectures import CATALOG as MODELS
from lotto.pruning import METHODS
from lotto.zoo.iterative import HANDLINGS
from lotto.families import FAMILIES


@pytest.mark.parametrize("kind,ids", [("method", METHODS), ("handling", HANDLINGS), ("model", MODELS),
                                      ("dataset", CATALOG), ("family", FAMILIES)])
def test_every_registered_id_has_a_readable_name(kind, ids):
    # lotto's own kinds in lotto/names.py, a family's (handlings, tickets, chains, its own name) in its spec
    missing = [i for i in ids if names.display(kind, i) == str(i)]
    assert not missing, f"no readable {kind} name for {missing} (lotto/names.py, or the family's spec)"
    shown = [names.display(kind, i) for i in ids]
    assert len(set(shown)) == len(shown), f"two {kind}s share a name: {shown}"
    assert not any("_" in s for s in shown), shown  # readable, not an id


def test_display_of_compound_and_unknown_ids():
    assert names.display("method", "l1_unstructured") == "layerwise L1"
    assert names.display("ticket", "vote2") == "vote: kept by ≥ 2 of k"
    assert names.display("ticket", "bespoke_fashion", {"fashion": "fashion_mnist"}) == "bespoke for Fashion-MNIST"
    assert names.display("task", "cifar10") == "CIFAR-10"
    assert names.display("task", "mytask") == "mytask"
    assert names.display("method", "my_new_method") == "my_new_method"  # a new method shows by its id
    assert names.display("model", 3) == "3"
    with pytest.raises(ValueError, match="unknown kind"):
        names.display("colour", "red")
