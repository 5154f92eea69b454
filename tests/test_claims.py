"""Claims as code: every claim of every family judged on constructed records in the formats the pipeline writes
(JSON records with per-example results, mask files, under tmp_path): where it holds (PASS), where it fails
(FAIL), where the run cannot decide it (INCONCLUSIVE, with what would decide it); the claim declarations and the
config's margins; the rows, CSV, console and HTML tables; the CLI; and `snakemake claims` on the tiny config.
The statistics and their calibration are tests/test_stats.py's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lotto import claims as core
from lotto import config as configmod
from lotto import evidence, pruning
from lotto.cli import main as lotto_main
from lotto.composability import claims as comp
from lotto.imp import claims as impc
from lotto.masks import Mask
from lotto.masks import compose as compose_masks
from lotto.zoo import claims as zooc
from workflow_helpers import ROOT, make_workdir, snakemake

ALL_CLAIMS = comp.CLAIMS + zooc.CLAIMS + impc.CLAIMS


def _write(path: Path, obj: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True))
    return path


def _cfg(**sections) -> dict:
    """A validated (partial) config: the claims section's defaults filled like the workflow's."""
    return configmod.validate(sections, partial=True)


def _row(rows, claim):
    found = [r for r in rows if r.id == claim.id]
    assert len(found) == 1, f"{claim.id}: {len(found)} rows"
    return found[0]


class ExampleSet:
    """One task's test set: n examples whose difficulty is fixed, and models' per-example results on it.

    A model of accuracy a gets right the examples whose latent score is below the a-quantile; the score mixes a
    per-replicate component every model of that replicate shares (``shared``) with the model's own, so models
    of one replicate make mostly the same mistakes (as networks of one recipe do) and the accuracy is exact."""

    def __init__(self, name: str, n: int = 4000, shared: float = 0.9, seed: int = 0):
        self.name, self.n, self.shared = name, n, shared
        self.rng = np.random.default_rng(seed)
        self.difficulty = self.rng.random(n)
        self._rep: dict[int, np.ndarray] = {}
        self.id = f"{name}:{n}:synthetic"

    def bits(self, accuracy: float, replicate: int) -> np.ndarray:
        if replicate not in self._rep:
            self._rep[replicate] = self.rng.random(self.n)
        z = self.shared * (0.5 * self.difficulty + 0.5 * self._rep[replicate]) + (1 - self.shared) * self.rng.random(self.n)
        k = int(round(accuracy * self.n))
        out = np.zeros(self.n, bool)
        out[np.argsort(z, kind="stable")[:k]] = True
        return out

    def record(self, accuracy: float, replicate: int, **labels) -> dict:
        bits = self.bits(accuracy, replicate)
        return {**labels, "replicate": replicate, "test_accuracy": float(bits.mean()), "test_loss": 0.3,
                "test_examples": self.n, evidence.KEY: evidence.pack(bits, self.id)}


def test_every_claim_declares_a_kind_margin_and_its_paper():
    assert len({c.id for c in ALL_CLAIMS}) == len(ALL_CLAIMS)
    for c in ALL_CLAIMS:
        assert c.kind in core.KINDS and c.sentence and c.effect
        if c.kind == core.SANITY:
            assert c.margin is None
        else:
            assert c.paper and ("arXiv" in c.paper) and c.margin_why
    docs = (ROOT / "docs" / "claims.md").read_text()
    for c in ALL_CLAIMS:  # the docs give each claim's kind and margin
        line = next((ln for ln in docs.splitlines() if ln.startswith(f"| {c.id} ")), None)
        assert line is not None, f"docs/claims.md has no row for {c.id}"
        assert c.kind in line, (c.id, line)
        if c.margin is not None:
            assert f"{c.margin:g}" in line, (c.id, line)


def test_claims_section_defaults_and_errors():
    cfg = _cfg()
    assert cfg["claims"]["confidence"] == 0.95 and cfg["claims"]["power"] == 0.8
    assert cfg["claims"]["margins"]["comp-union-matches-oneshot"] == 0.01
    assert set(cfg["claims"]["margins"]) == {c.id for c in ALL_CLAIMS if c.margin is not None}
    assert _cfg(claims={"margins": {"comp-union-matches-oneshot": 0.02}})["claims"]["margins"][
        "comp-union-matches-oneshot"] == 0.02
    with pytest.raises(configmod.ConfigError, match=r"claims\.margins\.nope.*allowed.*comp-union-matches-oneshot"):
        _cfg(claims={"margins": {"nope": 0.1}})
    with pytest.raises(configmod.ConfigError, match=r"claims\.margins\.comp-union-matches-oneshot"):
        _cfg(claims={"margins": {"comp-union-matches-oneshot": -0.1}})
    with pytest.raises(configmod.ConfigError, match=r"claims\.accuracy_tolerance' is retired.*claims\.margins"):
        _cfg(claims={"accuracy_tolerance": 0.02})
    with pytest.raises(configmod.ConfigError, match=r"claims\.random_ticket_min_sparsity"):
        _cfg(claims={"random_ticket_min_sparsity": 0.9, "random_ticket_max_sparsity": 0.8})


# =========================================================================== composability
TS, KS, GRID, REPS = (0, 40), (2, 3), (0.5, 0.8, 0.9), (0, 1)
LAYOUT = (("conv.weight", (16, 8, 3, 3)), ("fc.weight", (10, 200)))


def _oneshot(s: float) -> float:
    return 0.95 - 0.4 * s ** 4


def _sibling_weights(rep: int, t: int, sib: int, spread) -> dict[str, np.ndarray]:
    """A sibling's trained weights: the replicate's shared structure plus its own SGD noise (less after
    pretraining: ``spread(t)``); the layers differ in scale, so global pruning gives each its own sparsity."""
    base = np.random.default_rng(1000 + rep)
    own = np.random.default_rng(hash((rep, t, sib)) % 2**32)
    out = {}
    for (name, shape), scale in zip(LAYOUT, (1.0, 0.6)):
        out[name] = scale * (base.standard_normal(shape) + spread(t) * own.standard_normal(shape))
    return out


def comp_world(root: Path, ts=TS, ks=KS, grid=GRID, reps=REPS, spread=None, top_delta=None, loss0=0.08,
               random_gap=0.1, matched=True, same_masks=False, test: ExampleSet | None = None,
               bits=True, sibling_spread=None) -> list[Path]:
    """Every record the composability claims read, as `lotto prune`, `lotto compose` and `lotto train --metrics`
    write them: sibling masks (global magnitude pruning of weights with a shared structure), intersection
    sidecars, and the retrained tickets with per-example results on one test set. Composed tickets at the
    largest t sit ``top_delta[op]`` from the one-shot curve at their sparsity, at t=0 ``loss0`` below it; with
    ``matched`` they keep exactly the one-shot ticket's count (composability.match_sparsity), else their own
    (unions are less sparse than the target, intersections sparser). ``same_masks``: the largest t's siblings
    are the t=0 ones (no pretraining effect at all). ``sibling_spread``: also the dense siblings' metrics, their
    accuracies 0.96 + spread * (i - mean) (the run-to-run noise the claims borrow with one replicate)."""
    spread = spread or (lambda t: 1.0 if t == 0 else 0.25)
    top_delta = {"union": 0.002, "intersection": -0.002, **(top_delta or {})}
    test = test or ExampleSet("mnist")
    curve = lambda sp: float(np.interp(sp, grid, [_oneshot(g) for g in grid]))  # noqa: E731
    K = max(ks)
    paths = []
    for r in reps:
        for t in ts:
            base = root / f"rep{r}" / f"pre{t}"
            for s in grid:
                tag = f"s{s:.4f}"
                masks = []
                for i in range(1, K + 1):
                    w = _sibling_weights(r, 0 if same_masks else t, i, spread if not same_masks else (lambda _: 1.0))
                    m = pruning.global_magnitude(w, s).with_meta(replicate=r, pretrain_steps=t, sibling=i)
                    m.save(base / f"sibling{i}" / "masks" / f"{tag}.mask")
                    paths.append(base / f"sibling{i}" / "masks" / f"{tag}.mask")
                    masks.append(m)
                total = masks[0].total
                if sibling_spread is not None and s == grid[0]:
                    for i in range(1, K + 1):
                        rec = test.record(0.96 + sibling_spread * (i - (K + 1) / 2), r, pretrain_steps=t,
                                          ticket="dense", sibling=i, k=None, target_sparsity=0.0, sparsity=0.0)
                        paths.append(_write(base / f"sibling{i}" / "metrics.json", rec))
                for ticket, acc in (("oneshot", _oneshot(s)), ("random", _oneshot(s) - random_gap)):
                    rec = test.record(acc, r, pretrain_steps=t, ticket=ticket, k=None, target_sparsity=s,
                                      sparsity=masks[0].sparsity(), kept=masks[0].kept(), total=total)
                    if not bits:
                        rec.pop(evidence.KEY)
                    paths.append(_write(base / ticket / tag / "metrics.json", rec))
                for k in ks:
                    for op in ("union", "intersection"):
                        raw = compose_masks(masks[:k], op)
                        sp = masks[0].sparsity() if matched else raw.sparsity()
                        d = base / f"k{k}" / op / tag
                        sidecar = {"replicate": r, "pretrain_steps": t, "ticket": op, "k": k, "target_sparsity": s,
                                   "sparsity": sp, "raw_sparsity": raw.sparsity(), "kept": round((1 - sp) * total),
                                   "total": total, "overlap": 0.5, "chance": s ** (k - 1)}
                        paths.append(_write(d / "compose.json", sidecar))
                        inside = grid[0] <= sp <= grid[-1]
                        acc = (curve(sp) if inside else _oneshot(sp)) + (top_delta[op] if t == max(ts) else -loss0)
                        rec = test.record(acc, r, pretrain_steps=t, ticket=op, k=k, target_sparsity=s, sparsity=sp,
                                          kept=round((1 - sp) * total), total=total)
                        if not bits:
                            rec.pop(evidence.KEY)
                        paths.append(_write(d / "metrics.json", rec))
    return paths


def comp_eval(paths, grid=GRID, ks=KS, **claims):
    cfg = _cfg(claims=claims, composability={"pretrain_steps": [0], "ks": list(ks), "sparsities": list(grid)})
    return comp.evaluate(paths, cfg)


@pytest.fixture(scope="module")
def comp_pass(tmp_path_factory):
    return comp_eval(comp_world(tmp_path_factory.mktemp("comp-pass")))


def test_composability_one_row_per_claim_all_pass(comp_pass):
    assert [r.id for r in comp_pass] == [c.id for c in comp.CLAIMS]
    assert {r.verdict for r in comp_pass} == {"PASS"}, core.format_long(comp_pass)
    for r in comp_pass:
        assert r.family == "composability" and r.compared and r.reason
        if r.type != core.SANITY:
            assert r.ci_low <= r.estimate <= r.ci_high and r.margin is not None and r.confidence == 0.95


def test_overlap_above_chance(comp_pass, tmp_path):
    row = _row(comp_pass, comp.OVERLAP_ABOVE_CHANCE)
    assert row.replicates == 2 and row.cells == 6 and row.ci_low > 0  # every (k, s), at t=40
    assert "exact for the per-layer pruned counts" in row.compared
    # siblings with no shared structure at all: their masks overlap as random ones do
    row = _row(comp_eval(comp_world(tmp_path / "f", spread=lambda t: 30.0)), comp.OVERLAP_ABOVE_CHANCE)
    assert row.verdict != "PASS", core.format_long([row])
    # the exact chance is not s**(k-1): layers of different scale are pruned to different sparsities
    masks = [Mask.load(p) for p in sorted((tmp_path / "f").glob("rep0/pre40/sibling*/masks/s0.5000.mask"))][:2]
    from lotto.masks import chance_overlap_exact

    assert chance_overlap_exact(masks, 0.5) > 0.5 + 0.01


def test_overlap_with_one_replicate_uses_the_siblings_and_says_so(tmp_path):
    row = _row(comp_eval(comp_world(tmp_path, reps=(0,))), comp.OVERLAP_ABOVE_CHANCE)
    # k=3 is every sibling: nothing to leave out, so that cell has no interval with one replicate
    assert row.verdict == "INCONCLUSIVE" and "k=3" in row.compared
    assert "seed noise cannot be estimated" in row.note or "at least 2 replicates" in row.reason
    row = _row(comp_eval(comp_world(tmp_path / "k2", reps=(0,), ks=(2, 3)), ks=(2,)), comp.OVERLAP_ABOVE_CHANCE)
    assert row.verdict == "PASS" and comp.JACKKNIFE_NOTE in row.note


def test_pretraining_raises_overlap(comp_pass, tmp_path):
    row = _row(comp_pass, comp.PRETRAINING_RAISES_OVERLAP)
    assert row.verdict == "PASS" and row.estimate > 0.02
    # the case: the largest t's sibling masks replaced by the t=0 ones: zero effect, never a PASS
    row = _row(comp_eval(comp_world(tmp_path / "same", same_masks=True)), comp.PRETRAINING_RAISES_OVERLAP)
    assert row.verdict == "FAIL" and row.estimate == 0.0 and row.ci_high == 0.0, core.format_long([row])
    row = _row(comp_eval(comp_world(tmp_path / "one", ts=(40,))), comp.PRETRAINING_RAISES_OVERLAP)
    assert row.verdict == "INCONCLUSIVE" and "t=0" in row.reason
    row = _row(comp_eval(comp_world(tmp_path / "zero", ts=(0,))), comp.PRETRAINING_RAISES_OVERLAP)
    assert row.verdict == "INCONCLUSIVE" and "one rewind point" in row.reason


@pytest.mark.parametrize("claim, op", [(comp.UNION_MATCHES_ONESHOT, "union"),
                                       (comp.INTERSECTION_MATCHES_ONESHOT, "intersection")])
def test_composed_masks_match_oneshot(comp_pass, tmp_path, claim, op):
    row = _row(comp_pass, claim)
    assert row.type == "equivalence" and row.cells == 6 and -0.01 < row.ci_low and row.ci_high < 0.01
    assert "at the same sparsity" in row.compared
    # a consistent deficit of 0.03 on every cell: outside the margin, FAIL
    row = _row(comp_eval(comp_world(tmp_path / "f", top_delta={op: -0.03})), claim)
    assert row.verdict == "FAIL" and row.ci_high < -0.01
    # a deficit of 0.019 on 4,000 examples per replicate: never a PASS (the case)
    row = _row(comp_eval(comp_world(tmp_path / "d", top_delta={op: -0.019})), claim)
    assert row.verdict != "PASS"


def test_unmatched_compositions_are_read_between_grid_points_never_dropped(tmp_path):
    rows = comp_eval(comp_world(tmp_path, matched=False))
    union = _row(rows, comp.UNION_MATCHES_ONESHOT)
    # unions of s=0.5 are less sparse than every grid point: bounded on one side only, so not PASS, and the
    # cell is counted (not dropped)
    assert union.cells == 6 and union.verdict == "INCONCLUSIVE"
    assert comp.BRACKET_NOTE in union.note
    inter = _row(rows, comp.INTERSECTION_MATCHES_ONESHOT)
    assert inter.cells == 6 and inter.verdict != "PASS"


def test_random_ticket_below_oneshot(comp_pass, tmp_path):
    row = _row(comp_pass, comp.RANDOM_BELOW_ONESHOT)
    assert "s=0.9" in row.compared and row.estimate == pytest.approx(0.1, abs=1e-3) and row.cells == 1
    # the knife edge: gaps of 0.019 and 0.021 get the same kind of verdict, from their intervals
    gaps = [_row(comp_eval(comp_world(tmp_path / f"g{g}", random_gap=g)), comp.RANDOM_BELOW_ONESHOT).verdict
            for g in (0.019, 0.021)]
    assert gaps[0] == gaps[1] == "PASS"
    row = _row(comp_eval(comp_world(tmp_path / "same", random_gap=0.0)), comp.RANDOM_BELOW_ONESHOT)
    assert row.verdict == "FAIL" and row.estimate == 0.0  # identical arms: surely below what matters
    grid = (0.2, 0.3)
    row = _row(comp_eval(comp_world(tmp_path / "i", grid=grid), grid=grid), comp.RANDOM_BELOW_ONESHOT)
    assert row.verdict == "INCONCLUSIVE" and "[0.5, 0.9]" in row.reason
    row = _row(comp_eval(comp_world(tmp_path / "i2", grid=grid), grid=grid, random_ticket_min_sparsity=0.25),
               comp.RANDOM_BELOW_ONESHOT)
    assert row.verdict == "PASS" and "s=0.3" in row.compared


def test_one_replicate_borrows_the_run_to_run_noise_of_the_siblings(tmp_path):
    from lotto.stats import BORROWED, ONE_REPLICATE

    # siblings that agree: the run noise is small, and a 0.03 gap is resolved with one replicate
    calm = _row(comp_eval(comp_world(tmp_path / "calm", reps=(0,), random_gap=0.03, sibling_spread=0.0)),
                comp.RANDOM_BELOW_ONESHOT)
    assert calm.verdict == "PASS" and ONE_REPLICATE in calm.note
    # siblings 3 points apart from one another: the same gap is no longer told from run-to-run noise
    noisy = _row(comp_eval(comp_world(tmp_path / "noisy", reps=(0,), random_gap=0.03, sibling_spread=0.03)),
                 comp.RANDOM_BELOW_ONESHOT)
    assert noisy.verdict == "INCONCLUSIVE" and BORROWED in noisy.note and noisy.replicates_needed
    assert noisy.ci_high - noisy.ci_low > 3 * (calm.ci_high - calm.ci_low)


def test_old_records_without_per_example_results_still_get_verdicts(tmp_path):
    rows = comp_eval(comp_world(tmp_path, bits=False))
    row = _row(rows, comp.RANDOM_BELOW_ONESHOT)
    assert row.verdict == "PASS" and "lack per-example results" in row.note
    paired = _row(comp_eval(comp_world(tmp_path / "b")), comp.RANDOM_BELOW_ONESHOT)
    assert row.ci_high - row.ci_low > paired.ci_high - paired.ci_low  # wider without pairing


def test_intersections_sparser_is_a_sanity_check(comp_pass, tmp_path):
    row = _row(comp_pass, comp.INTERSECTIONS_SPARSER)
    assert row.type == "sanity" and row.verdict == "PASS" and row.estimate > 0
    row = _row(comp_eval(comp_world(tmp_path / "i", ks=(2,)), ks=(2,)), comp.INTERSECTIONS_SPARSER)
    assert row.verdict == "INCONCLUSIVE" and "composability.ks" in row.reason
    text = core.format_table(comp_pass)
    assert "sanity checks (not paper claims): 1 of 1 hold" in text and "6 claims: 6 PASS" in text


def test_pretraining_helps_composition(comp_pass, tmp_path):
    row = _row(comp_pass, comp.PRETRAINING_HELPS_COMPOSITION)
    assert row.estimate == pytest.approx(0.08, abs=0.005) and row.ci_low > 0
    row = _row(comp_eval(comp_world(tmp_path / "f", loss0=0.0)), comp.PRETRAINING_HELPS_COMPOSITION)
    assert row.verdict == "FAIL"
    # the run cannot tell one-shot from a random ticket: the effect is capped, so it is not decided
    row = _row(comp_eval(comp_world(tmp_path / "r", random_gap=0.0)), comp.PRETRAINING_HELPS_COMPOSITION)
    assert row.verdict == "INCONCLUSIVE" and "random ticket" in row.reason
    row = _row(comp_eval(comp_world(tmp_path / "i", ts=(10, 40))), comp.PRETRAINING_HELPS_COMPOSITION)
    assert row.verdict == "INCONCLUSIVE" and "t=0" in row.reason


def test_composability_records_are_checked_by_the_real_loader(tmp_path):
    paths = comp_world(tmp_path)
    victim = next(p for p in paths if p.name == "compose.json")
    rec = json.loads(victim.read_text())
    rec.pop("overlap")
    victim.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="missing required key 'overlap'"):
        comp_eval(paths)
    victim = next(p for p in paths if p.name == "metrics.json")
    rec = json.loads(victim.read_text())
    rec["test_accuracy"] = 0.123
    victim.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="inconsistent"):
        comp_eval(paths)


# =========================================================================== zoo
TASKS, METHODS, HANDLINGS, N = ("fashion", "mnist"), ("global_l1", "l1_unstructured", "l1_structured"), \
    ("rewind_init", "finetune"), 2
ZLAYOUT = (("conv.weight", (8, 1, 3, 3)), ("fc.weight", (10, 100)))


def _zmask(kept: dict[str, np.ndarray], **labels) -> Mask:
    return Mask.from_bools([(n, kept[n].reshape(shape)) for n, shape in ZLAYOUT], meta=labels)


def _random_kept(seed: int, frac: float = 0.4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in ZLAYOUT:
        n = int(np.prod(shape))
        keep = np.zeros(n, bool)
        keep[rng.choice(n, int(frac * n), replace=False)] = True
        out[name] = keep
    return out


def _halves(pattern: str) -> dict[str, np.ndarray]:
    """Half of every layer kept: the first half, or every other weight. Two such masks share exactly what
    random masks of their per-layer sparsity share on average (a quarter of each layer)."""
    return {n: (np.arange(int(np.prod(s))) < int(np.prod(s)) // 2) if pattern == "first"
            else (np.arange(int(np.prod(s))) % 2 == 0) for n, s in ZLAYOUT}


def zoo_world(root: Path, reps=REPS, tasks=TASKS, methods=METHODS, handlings=HANDLINGS, acc=None, masks=None,
              transfer=None, consensus_sparsity=0.36) -> list[Path]:
    """Rounds (metrics.json + mask.mask as `lotto zoo-iterate` writes them) of every method x handling on the
    main task and of the bespoke run (global_l1, rewind_init) on the others, and every ticket retrained on every
    task (the bespoke ticket on its own task is its own run's last round), with per-example results on each
    task's own test set. ``acc(task, method, handling)``, ``masks(task, method, handling, rep)``,
    ``transfer(ticket, target)`` override the defaults."""
    base_acc = {"global_l1": 0.85, "l1_unstructured": 0.845, "l1_structured": 0.84}
    acc = acc or (lambda t, m, h: base_acc[m] + (0.002 if h == "rewind_init" else 0.0) - 0.02 * (t != tasks[0]))
    core_kept = _random_kept(99, 0.6)
    tests = {t: ExampleSet(t, seed=len(t)) for t in tasks}

    def default_mask(task, method, handling, rep):
        if method == "global_l1" and handling == "rewind_init":  # bespoke tickets share a core
            noise = _random_kept(1000 + 7 * rep + len(task), 0.8)
            return {n: core_kept[n] & noise[n] for n in core_kept}
        return _random_kept(hash((task, method, handling, rep)) % 2**32)

    masks = masks or default_mask
    transfer_acc = {"consensus": None, "random": 0.70}
    transfer = transfer or (lambda ticket, target: transfer_acc.get(ticket, 0.80))
    paths = []
    for r in reps:
        for t in tasks:
            runs = [(m, h) for m in methods for h in handlings] if t == tasks[0] else [("global_l1", "rewind_init")]
            for m, h in runs:
                for n in range(1, N + 1):  # round 1 is 20% sparse, round 2 the last (about 60% sparse)
                    d = root / f"rep{r}" / "zoo" / t / m / h / f"iter{n}"
                    labels = {"task": t, "method": m, "handling": h, "iteration": n}
                    mask = _zmask(masks(t, m, h, r) if n == N else _random_kept(n, 0.8), replicate=r, **labels)
                    mask.save(d / "mask.mask")
                    paths.append(d / "mask.mask")
                    a = acc(t, m, h) + (0.01 if n < N else 0.0)
                    rec = {**tests[t].record(a, r, **labels), "sparsity": mask.sparsity(), "kept": mask.kept(),
                           "total": mask.total, "start_step": 0, "mask": str(d / "mask.mask"), "layers": []}
                    paths.append(_write(d / "metrics.json", rec))
        for ticket in [f"bespoke_{t}" for t in tasks] + ["consensus", "random"]:
            for target in tasks:
                if ticket == f"bespoke_{target}":
                    continue
                a = transfer(ticket, target)
                sparsity = consensus_sparsity if ticket == "consensus" else 0.6
                if a is None:  # the consensus: halfway between the bespoke run's rounds in accuracy
                    a = acc(target, "global_l1", "rewind_init") + 0.005
                rec = {**tests[target].record(a, r, ticket=ticket, target=target), "sparsity": sparsity,
                       "kept": 300, "total": 1072}
                paths.append(_write(root / f"rep{r}" / "zoo_transfer" / ticket / f"on_{target}" / "metrics.json", rec))
    return paths


def zoo_eval(paths, **claims):
    cfg = _cfg(claims=claims, zoo={"methods": list(METHODS), "iterations": N, "tasks": []})
    return zooc.evaluate(paths, cfg)


@pytest.fixture(scope="module")
def zoo_pass(tmp_path_factory):
    return zoo_eval(zoo_world(tmp_path_factory.mktemp("zoo-pass")))


def test_zoo_one_row_per_claim_all_pass(zoo_pass):
    assert [r.id for r in zoo_pass] == [c.id for c in zooc.CLAIMS]
    assert {r.verdict for r in zoo_pass} == {"PASS"}, core.format_long(zoo_pass)


def test_methods_differ_needs_one_pair_not_every_pair(zoo_pass, tmp_path):
    row = _row(zoo_pass, zooc.METHODS_DIFFER)
    assert row.margin == 0.1 and row.replicates == 2
    # two methods with the same masks and one that differs: the claim is about the existence of different masks
    same = lambda t, m, h, r: _random_kept(r + (0 if m != "l1_structured" else 50))  # noqa: E731
    row = _row(zoo_eval(zoo_world(tmp_path / "some", masks=same)), zooc.METHODS_DIFFER)
    assert row.verdict == "PASS" and "L1 structured" in row.compared  # display names (lotto.names)
    every = lambda t, m, h, r: _random_kept(r)  # noqa: E731
    row = _row(zoo_eval(zoo_world(tmp_path / "f", masks=every)), zooc.METHODS_DIFFER)
    assert row.verdict == "FAIL" and row.estimate == pytest.approx(-0.1)
    far = lambda t, m, h: {"global_l1": 0.9, "l1_unstructured": 0.7, "l1_structured": 0.5}[m]  # noqa: E731
    row = _row(zoo_eval(zoo_world(tmp_path / "i", acc=far)), zooc.METHODS_DIFFER)
    assert row.verdict == "INCONCLUSIVE" and "comparable accuracy" in row.reason
    row = _row(zoo_eval(zoo_world(tmp_path / "one", methods=("global_l1",))), zooc.METHODS_DIFFER)
    assert row.verdict == "INCONCLUSIVE" and "zoo.methods" in row.reason


def test_bespoke_best_on_own_task_is_superiority(zoo_pass, tmp_path):
    row = _row(zoo_pass, zooc.BESPOKE_BEST)
    assert row.type == "superiority" and row.ci_low > 0
    # a bespoke ticket 0.019 behind the other task's everywhere (non-inferiority would have passed it)
    behind = lambda ticket, target: 0.82 + 0.019 * (ticket == "bespoke_mnist") if target == "fashion" else 0.8  # noqa: E731,E501
    own = lambda t, m, h: 0.82 if t == "fashion" else 0.85  # noqa: E731
    row = _row(zoo_eval(zoo_world(tmp_path / "f", transfer=behind, acc=own)), zooc.BESPOKE_BEST)
    assert row.verdict == "FAIL" and "on fashion" in row.compared
    row = _row(zoo_eval(zoo_world(tmp_path / "i", tasks=("fashion",))), zooc.BESPOKE_BEST)
    assert row.verdict == "INCONCLUSIVE" and "zoo.tasks" in row.reason


def test_transfer_and_consensus_above_random(zoo_pass, tmp_path):
    assert _row(zoo_pass, zooc.TRANSFER_ABOVE_RANDOM).estimate == pytest.approx(0.1, abs=0.002)
    weak = lambda ticket, target: {"random": 0.80, "consensus": 0.803}.get(ticket, 0.801)  # noqa: E731
    rows = zoo_eval(zoo_world(tmp_path / "f", transfer=weak))
    assert _row(rows, zooc.TRANSFER_ABOVE_RANDOM).verdict == "FAIL"
    assert _row(rows, zooc.CONSENSUS_ABOVE_RANDOM).verdict == "FAIL"
    rows = zoo_eval(zoo_world(tmp_path / "i", tasks=("fashion",)))
    assert _row(rows, zooc.TRANSFER_ABOVE_RANDOM).verdict == _row(rows, zooc.CONSENSUS_ABOVE_RANDOM).verdict \
        == "INCONCLUSIVE"


def test_task_masks_overlap_more_than_random(zoo_pass, tmp_path):
    row = _row(zoo_pass, zooc.TASK_MASKS_OVERLAP)
    assert row.ci_low > 0 and "fashion vs mnist" in row.compared

    def at_chance(t, m, h, r):
        return _halves("first" if t == "fashion" else "every other")

    row = _row(zoo_eval(zoo_world(tmp_path / "f", masks=at_chance)), zooc.TASK_MASKS_OVERLAP)
    # half and half of each layer, a quarter shared: Jaccard 1/3, exactly the random expectation
    assert row.verdict == "FAIL" and row.estimate == pytest.approx(0.0, abs=1e-12)


def test_random_expectation_keeps_per_layer_counts():
    a = Mask.from_bools([("l1", np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)), ("l2", np.ones(8, bool))])
    b = Mask.from_bools([("l1", np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)), ("l2", np.array([1, 1] + [0] * 6, bool))])
    observed, expected = zooc._shared(a, b)
    assert observed == pytest.approx(6 / (12 + 6 - 6)) and expected == pytest.approx(4 / (12 + 6 - 4))


def test_consensus_is_compared_with_the_bespoke_run_at_its_sparsity(zoo_pass, tmp_path):
    row = _row(zoo_pass, zooc.CONSENSUS_MATCHES_BESPOKE)
    assert row.type == "equivalence" and "between its rounds" in row.compared
    low = lambda ticket, target: {"consensus": 0.75, "random": 0.70}.get(ticket, 0.82)  # noqa: E731
    assert _row(zoo_eval(zoo_world(tmp_path / "f", transfer=low)), zooc.CONSENSUS_MATCHES_BESPOKE).verdict == "FAIL"
    # sparser than every round: compared with the sparsest round, and the row says so
    row = _row(zoo_eval(zoo_world(tmp_path / "s", consensus_sparsity=0.8)), zooc.CONSENSUS_MATCHES_BESPOKE)
    assert "sparser than every bespoke round" in row.note and "sparsest round" in row.compared
    # sparser and less accurate: its extra sparsity may be why, so it cannot FAIL the claim; the row says how
    # many rounds take the bespoke run to the consensus's sparsity
    row = _row(zoo_eval(zoo_world(tmp_path / "sl", transfer=low, consensus_sparsity=0.8)),
               zooc.CONSENSUS_MATCHES_BESPOKE)
    assert row.verdict == "INCONCLUSIVE" and row.estimate < -0.01, row.reason
    assert "zoo.iterations: 8 takes the bespoke run" in row.reason  # 1 - 0.8^8 = 0.83 >= 0.8 > 1 - 0.8^7


def test_finetune_matches_rewind_is_an_equivalence(zoo_pass, tmp_path):
    row = _row(zoo_pass, zooc.FINETUNE_MATCHES_REWIND)
    assert row.type == "equivalence" and row.verdict == "PASS" and "round 2" in row.compared
    # finetuning better by 0.05 for one method: not comparable, whichever side wins
    fine = lambda t, m, h: 0.8 + (0.05 if h == "finetune" and m == "l1_structured" else 0.0)  # noqa: E731
    row = _row(zoo_eval(zoo_world(tmp_path / "f", acc=fine)), zooc.FINETUNE_MATCHES_REWIND)
    assert row.verdict == "FAIL" and "L1 structured" in row.compared and row.estimate < 0
    rewind = lambda t, m, h: 0.8 + (0.05 if h == "rewind_init" and m == "l1_structured" else 0.0)  # noqa: E731
    assert _row(zoo_eval(zoo_world(tmp_path / "r", acc=rewind)), zooc.FINETUNE_MATCHES_REWIND).verdict == "FAIL"
    row = _row(zoo_eval(zoo_world(tmp_path / "i", handlings=("rewind_init",))), zooc.FINETUNE_MATCHES_REWIND)
    assert row.verdict == "INCONCLUSIVE" and "finetune" in row.reason


# =========================================================================== imp
DENSE_ACC = {0: 0.90, 1: 0.88, 2: 0.89}  # epsilon: sd of the dense error over replicates = 0.01


def imp_world(root: Path, reps=(0, 1, 2), taus=(0, 8), levels=6, acc=None, barrier=None, adaptive=None,
              adaptive_acc=None, n=4000) -> list[Path]:
    """Level metrics (`lotto train --metrics` with the imp labels) of the fixed chain (20% per level) and an
    adaptive chain at the largest tau, and `lotto imp-path` records between successive levels, with
    per-example results: each level's accuracy is its replicate's dense accuracy plus ``acc(tau, L)``."""
    acc = acc or (lambda tau, L: 0.0 if L <= 3 else -0.1)
    barrier = barrier or (lambda tau, a: 0.0 if a + 1 <= 3 else 0.1)
    adaptive = adaptive if adaptive is not None else [0.5, 0.75, 0.875]
    adaptive_acc = adaptive_acc or (lambda L: 0.0)
    test = ExampleSet("fashion", n=n, shared=0.95)
    paths = []

    def level(r, tau, chain, L, sparsity, a):
        d = root / f"rep{r}" / f"pre{tau}" / "imp" / chain / f"level{L}"
        rec = {**test.record(a, r, family="imp", pretrain_steps=tau, chain=chain, level=L), "step": 32,
               "sparsity": sparsity, "kept": None, "total": None, "last_epoch_train_loss_mean": 0.2,
               "last_epoch_train_loss_std": 0.02}
        paths.append(_write(d / "metrics.json", rec))

    for r in reps:
        dense = DENSE_ACC[r]
        for tau in taus:
            accs = [dense + (0.0 if L == 0 else acc(tau, L)) for L in range(levels)]
            for L in range(levels):
                level(r, tau, "fixed", L, 1 - 0.8 ** L, accs[L])
            for a in range(levels - 1):
                b = a + 1
                betas = [0.0, 0.5, 1.0]
                mid = (accs[a] + accs[b]) / 2 - barrier(tau, a)
                path_accs = [accs[a], mid, accs[b]]
                bits = [test.bits(x, r) for x in path_accs]
                rec = {"replicate": r, "pretrain_steps": tau, "chain": "fixed", "level_a": a, "level_b": b,
                       "kind": "imp-path", "beta": betas, "test_error": [1 - float(x.mean()) for x in bits],
                       "test_loss": [0.3] * 3, "barrier": barrier(tau, a), "max_error": 1 - float(bits[1].mean()),
                       "sparsity_a": 1 - 0.8 ** a, "sparsity_b": 1 - 0.8 ** b, "bn_stats": "recompute",
                       "test_examples": n, "test_correct": [evidence.pack(x, test.id) for x in bits]}
                paths.append(_write(root / f"rep{r}" / f"pre{tau}" / "imp" / "fixed" / "paths" /
                                    f"level{a}-level{b}.json", rec))
        for L, s in enumerate(adaptive, start=1):
            level(r, max(taus), "adaptive", L, s, dense + adaptive_acc(L))
    return paths


def imp_eval(paths, **claims):
    cfg = _cfg(claims=claims, imp={"pretrain_steps": [0, 8], "levels": 6, "adaptive": {"target_sparsity": 0.5}})
    return impc.evaluate(paths, cfg)


@pytest.fixture(scope="module")
def imp_pass(tmp_path_factory):
    return imp_eval(imp_world(tmp_path_factory.mktemp("imp-pass")))


def test_imp_one_row_per_claim_all_pass(imp_pass):
    assert [r.id for r in imp_pass] == [c.id for c in impc.CLAIMS]
    assert {r.verdict for r in imp_pass} == {"PASS"}, core.format_long(imp_pass)


def test_barrier_iff_matching_states_sensitivity_and_specificity(imp_pass, tmp_path):
    row = _row(imp_pass, impc.BARRIER_IFF_MATCHING)
    assert row.type == "iff" and row.margin == pytest.approx(0.01)  # epsilon: the dense sd, one for both
    assert "sensitivity 4/4" in row.reason and "specificity 4/4" in row.reason  # levels 1-5: pairs 1-2, 2-3 match
    # level 0 -> 1 is never judged (the paper excludes it): a barrier there changes nothing
    shaky = lambda tau, a: 0.2 if a == 0 else (0.0 if a + 1 <= 3 else 0.1)  # noqa: E731
    assert _row(imp_eval(imp_world(tmp_path / "l0", barrier=shaky)), impc.BARRIER_IFF_MATCHING).verdict == "PASS"
    # every non-matching pair connected: the case, a FAIL whatever share agrees
    row = _row(imp_eval(imp_world(tmp_path / "f", barrier=lambda tau, a: 0.0)), impc.BARRIER_IFF_MATCHING)
    assert row.verdict == "FAIL" and "specificity 0/4" in row.reason


def test_barrier_claim_inconclusive_without_what_it_needs(tmp_path):
    row = _row(imp_eval(imp_world(tmp_path / "r", reps=(0,))), impc.BARRIER_IFF_MATCHING)
    assert row.verdict == "INCONCLUSIVE" and "imp.replicates" in row.reason
    row = _row(imp_eval(imp_world(tmp_path / "m", acc=lambda tau, L: 0.0, barrier=lambda tau, a: 0.0)),
               impc.BARRIER_IFF_MATCHING)
    assert row.verdict == "INCONCLUSIVE" and "imp.levels" in row.reason


def test_adaptive_fewer_rounds(imp_pass, tmp_path):
    row = _row(imp_pass, impc.ADAPTIVE_FEWER_ROUNDS)
    assert row.verdict == "PASS" and row.cells == 2  # rounds saved, and matching at the target
    row = _row(imp_eval(imp_world(tmp_path / "f", adaptive=[0.2, 0.36, 0.488, 0.5904])), impc.ADAPTIVE_FEWER_ROUNDS)
    assert row.verdict == "FAIL" and "rounds saved" in row.compared
    row = _row(imp_eval(imp_world(tmp_path / "nm", adaptive_acc=lambda L: -0.2)), impc.ADAPTIVE_FEWER_ROUNDS)
    assert row.verdict == "FAIL" and "matching" in row.compared
    # the deciding cell is the accuracy half: its own kind and margin (epsilon), not the rounds' margin of 1
    assert row.cell_type == "non-inferiority" and 0 < row.margin < 0.1
    assert core.format_table([row]).splitlines()[1].split(" vs ")[-1].startswith(f"> -{row.margin:g}")
    # exactly as good as dense: matching (the old rule, every replicate below dense mean + sd, passed only ~half)
    row = _row(imp_eval(imp_world(tmp_path / "eq", adaptive_acc=lambda L: 0.0)), impc.ADAPTIVE_FEWER_ROUNDS)
    assert row.verdict == "PASS"
    row = _row(imp_eval(imp_world(tmp_path / "i", levels=3)), impc.ADAPTIVE_FEWER_ROUNDS)
    assert row.verdict == "INCONCLUSIVE" and "imp.levels" in row.reason
    row = _row(imp_eval(imp_world(tmp_path / "n", adaptive=[])), impc.ADAPTIVE_FEWER_ROUNDS)
    assert row.verdict == "INCONCLUSIVE" and "adaptive" in row.reason


# =========================================================================== tables and the CLI
def test_rows_round_trip_through_csv_and_print(comp_pass, tmp_path):
    core.write_csv(comp_pass, tmp_path / "c.csv")
    back = core.read_csv([tmp_path / "c.csv"])
    assert back == comp_pass
    assert list(tmp_path.iterdir()) == [tmp_path / "c.csv"]  # atomic: no temporary left
    text = core.format_table(back)
    lines = text.splitlines()
    assert lines[0].startswith("verdict") and "interval" in lines[0] and len(lines) <= 2 * len(back) + 3
    assert max(len(ln) for ln in lines) <= 120
    assert re.search(r"PASS\s+comp-random-below-oneshot\s+\+0\.\d{3} \[\+0\.\d{3}, \+0\.\d{3}\] vs > 0", text)
    with pytest.raises(ValueError, match="verdict"):
        core.Row("f", "i", "superiority", "MAYBE", "c")
    (tmp_path / "bad.csv").write_text("family,id,verdict,claim,tolerance\n")
    with pytest.raises(ValueError, match="older lotto"):
        core.read_csv([tmp_path / "bad.csv"])


def test_html_table_is_compact_and_coloured(comp_pass):
    html = core.format_html(comp_pass)
    assert html.count("<tr style") == len(comp_pass) and "<details>" in html and "table-layout:fixed" in html
    assert "Sanity checks" in html and "#007a5a" in html


def test_cli_claims_and_claims_table(tmp_path, capsys):
    paths = [str(p) for p in imp_world(tmp_path / "imp")]
    cfg = json.dumps({"claims": {"confidence": 0.95},
                      "imp": {"pretrain_steps": [0, 8], "levels": 6, "adaptive": {"target_sparsity": 0.5}}})
    part = tmp_path / "tables" / "claims-imp.csv"
    assert lotto_main(["claims", "--family", "imp", "--config", cfg, "--out", str(part), *paths]) == 0
    assert "imp-barrier-iff-matching" in capsys.readouterr().out
    merged, html = tmp_path / "tables" / "claims.csv", tmp_path / "tables" / "claims.html"
    assert lotto_main(["claims-table", "--out", str(merged), "--html", str(html), str(part)]) == 0
    out = capsys.readouterr().out
    assert "2 claims: 2 PASS, 0 FAIL, 0 INCONCLUSIVE" in out and html.is_file()
    assert lotto_main(["claims-table", "--long", str(merged)]) == 0
    assert "compared:" in capsys.readouterr().out
    assert [r.verdict for r in core.read_csv([merged])] == ["PASS", "PASS"]
    assert lotto_main(["claims", "--family", "nope", "--config", cfg, "--out", str(part), *paths]) == 1
    assert "not a lotto experiment family" in capsys.readouterr().err
    assert lotto_main(["claims", "--family", "zoo", "--config", cfg, "--out", str(part), *paths]) == 1
    assert "no 'zoo' section" in capsys.readouterr().err


def test_claims_modules_stay_import_light():
    # the Snakefile imports lotto.composability.claims at parse time, on every cluster job
    code = ("import sys, lotto.claims, lotto.composability.claims, lotto.zoo.claims, lotto.imp.claims, lotto.config; "
            "lotto.config.validate({}, partial=True); "
            "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# =========================================================================== the workflow
@pytest.mark.slow
def test_snakemake_claims_on_the_tiny_config(tmp_path):
    work = make_workdir(tmp_path)
    proc = snakemake(["claims", "--cores", "2", "--configfile", "workflow/configs/tiny.yaml"], cwd=work, timeout=900)
    table = work / "results" / "tiny" / "tables" / "claims.csv"
    rows = core.read_csv([table])
    assert [r.id for r in rows] == [c.id for c in comp.CLAIMS]  # one verdict per claim
    assert all(r.verdict in core.VERDICTS and r.reason for r in rows)
    # printed once, as the last thing the run prints
    assert proc.stdout.count("comp-overlap-above-chance") == 1
    assert proc.stdout.rstrip().splitlines()[-1].startswith("6 claims:")
    # only what the claims read was built: e.g. no figure, and no random ticket but at the claim's sparsity
    assert not (work / "results" / "tiny" / "figures").exists()
    randoms = sorted(p.parent.name for p in (work / "results" / "tiny").glob("rep0/pre4/random/*/metrics.json"))
    assert randoms == ["s0.8000"]
    # the trained tickets' records carry their per-example results on the test set
    rec = json.loads(next((work / "results" / "tiny").glob("rep0/pre4/oneshot/*/metrics.json")).read_text())
    bits = evidence.unpack(rec[evidence.KEY])
    assert bits.size == rec["test_examples"] and bits.mean() == pytest.approx(rec["test_accuracy"])
    # an up-to-date rerun prints the table again, last
    again = snakemake(["claims", "--cores", "2", "--configfile", "workflow/configs/tiny.yaml"], cwd=work)
    assert "Nothing to be done" in again.stdout + again.stderr
    assert again.stdout.rstrip().splitlines()[-1].startswith("6 claims:")
    # and a dry run does not
    dry = snakemake(["-n", "claims", "--cores", "2", "--configfile", "workflow/configs/tiny.yaml"], cwd=work)
    assert "claims:" not in dry.stdout
    # the report of a claims-only run: what is there, and a line on how to build the rest
    rep = snakemake(["--report", "report.html", "--configfile", "workflow/configs/tiny.yaml"], cwd=work)
    assert "comp-overlap-above-chance" in (work / "report.html").read_text()
    assert "not built yet" in rep.stderr and "snakemake --cores N --configfile workflow/configs/tiny.yaml" in rep.stderr
