"""A family is a package, a rule file and one line (issue 19): a toy fourth family, written into a copy of the
repository as a newcomer following docs/ARCHITECTURE.md would write it (its spec, schema, a subcommand drawing a
figure, a claim, a rule file, a caption, a config), registered with one line in lotto/families.py, runs its DAG on
the tiny data; its figure is in the report and its claim in claims.csv, and no other file of the repository was
edited."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lotto import claims as core
from workflow_helpers import ROOT

COPIED = ("lotto", "workflow", "Snakefile", "config.yaml", "profiles", "slurm", "envs")

TOY = {
    "lotto/toy/__init__.py": '''
        """A toy family: masks of theta_0 at a few sparsities, one figure, one claim (import-light)."""
        from lotto.family import Family, Figure, Paper

        FAMILY = Family(
            name="toy",
            package=__name__,
            title="Toy",
            paper="Nobody (2026)",
            papers=(Paper("Nobody (2026), A toy family", "https://example.org/toy"),),
            figures=(Figure("toy_masks", "the sparsity of each toy mask", "1 Masks", "no paper figure"),),
            figures_target="toy_figures",
            display="toy family",
            problems="lotto.toy:problems",
        )


        def problems(cfg):
            return [] if cfg["toy"]["sparsities"] else ["config key 'toy.sparsities': give at least one"]
    ''',
    "lotto/toy/schema.yaml": '''
        type: object
        additionalProperties: false
        required: [sparsities]
        properties:
          sparsities:
            type: array
            items: {type: number, exclusiveMinimum: 0, exclusiveMaximum: 1}
          replicates:
            type: array
            items: {type: integer, minimum: 0}
            default: [0]
    ''',
    "lotto/toy/cli.py": '''
        """The toy family's subcommand: its figure."""


        def cmd_toy_figure(args):
            import pandas as pd

            from lotto import figures
            from lotto.masks import Mask

            table = pd.DataFrame([{"mask": str(p), "sparsity": Mask.load(p).sparsity()} for p in args.inputs])
            fig = figures.new_figure()
            ax = fig.add_subplot()
            ax.bar(range(len(table)), table["sparsity"])
            ax.set_ylabel("sparsity")
            figures.save(fig, table, args.out_prefix)


        def register(add, common):
            sp = add("toy-figure", cmd_toy_figure, "Draw the toy family's figure.")
            sp.add_argument("name")
            sp.add_argument("--context", default=None)
            sp.add_argument("--out-prefix", required=True)
            sp.add_argument("inputs", nargs="+")
    ''',
    "lotto/toy/claims.py": '''
        """The toy family's one claim: its masks are as sparse as asked (a sanity check)."""
        from lotto.claims import SANITY, Claim
        from lotto.masks import Mask
        from lotto.stats import FAIL, PASS

        MASKS_AT_TARGET = Claim("toy", "toy-masks-at-target", SANITY, "Every toy mask prunes the fraction asked.",
                                "mask sparsity minus the target", None, "", "not a paper claim")
        CLAIMS = (MASKS_AT_TARGET,)


        def evaluate(paths, cfg):
            gaps = [abs(Mask.load(p).sparsity() - Mask.load(p).meta["sparsity"]) for p in paths]
            ok = max(gaps) < 1e-3
            return [MASKS_AT_TARGET.row(PASS if ok else FAIL, f"largest gap {max(gaps):.2e}", estimate=max(gaps),
                                        cells=len(gaps))]
    ''',
    "workflow/rules/toy.smk": '''
        TOY = config.get("toy")

        if TOY:

            def toy_mask(rep, s):
                return f"{ROOT}/rep{rep}/toy/s{s}.mask"

            TOY_MASKS = [toy_mask(r, f"{s:.4f}") for r in TOY["replicates"] for s in TOY["sparsities"]]

            rule toy_mask:
                input:
                    lambda w: init_path(w.rep),
                output:
                    f"{ROOT}/rep{{rep}}/toy/s{{s}}.mask",
                log:
                    f"{ROOT}/rep{{rep}}/toy/s{{s}}.log",
                shell:
                    "lotto prune --checkpoint {input} --sparsity {wildcards.s} --out {output} > {log} 2>&1"

            TARGETS += TOY_MASKS + figure_files("toy_masks")

            register_outputs(
                "toy",
                figures=["toy_masks"],
                figure_inputs=lambda name: TOY_MASKS,
                figure_command=lambda name: f"toy-figure {name}",
                claim_inputs=lambda: TOY_MASKS,
            )
    ''',
    "workflow/report/toy_masks.rst": '''
        **How sparse is each toy mask?** One bar per mask of theta_0. Mirrors no paper figure.
    ''',
    "toy.yaml": '''
        experiment: toy
        results_dir: results
        data: {dataset: mnist_embedded, source: embedded, train_size: 256, test_size: 128}
        model: {name: lenet}
        training: {epochs: 1, batch_size: 64, milestones: [], eval_batch_size: 128, log_every: 2,
                   checkpoint_every: 4}
        toy: {sparsities: [0.5, 0.8]}
        resources: {train_threads: 1, train_gpus: 0, train_mem_mb: 1000, train_runtime: 10}
    ''',
}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for name in COPIED for p in ([root / name] if (root / name).is_file() else (root / name).rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.slow
def test_a_toy_fourth_family_is_a_package_a_rule_file_and_one_line(tmp_path):
    repo = tmp_path / "repo"
    for name in COPIED:
        src = ROOT / name
        (shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir()
         else shutil.copy(src, repo / name))
    before = _digests(repo)
    for rel, text in TOY.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(textwrap.dedent(text).lstrip())
    # the one line
    families = repo / "lotto" / "families.py"
    text = families.read_text()
    assert '    "lotto.imp",\n' in text
    families.write_text(text.replace('    "lotto.imp",\n', '    "lotto.imp",\n    "lotto.toy",\n'))

    after = _digests(repo)
    edited = [p for p in before if after.get(p) != before[p]]
    assert edited == ["lotto/families.py"], edited  # every other change is a new file of the toy family

    env = dict(os.environ, PYTHONPATH=str(repo))  # this copy's lotto, with the toy family
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--cores", "2", "--configfile", "toy.yaml",
           "--report", "report.html", "--report-after-run"]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    exp = repo / "results" / "toy"
    assert (exp / "figures" / "toy_masks.png").is_file() and (exp / "figures" / "toy_masks.csv").is_file()
    rows = core.read_csv([exp / "tables" / "claims.csv"])
    assert [(r.id, r.verdict) for r in rows] == [("toy-masks-at-target", "PASS")]
    report = (repo / "report.html").read_text()
    assert "toy_masks" in report and "toy-masks-at-target" in report and "https://example.org/toy" in report
    # the toy family's own config check runs with the others'
    (repo / "bad.yaml").write_text((repo / "toy.yaml").read_text().replace("[0.5, 0.8]", "[]"))
    bad = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "--cores", "1", "--configfile",
                          "bad.yaml"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "config key 'toy.sparsities': give at least one" in bad.stdout + bad.stderr
