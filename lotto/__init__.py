"""lotto: reproducible lottery-ticket pruning experiments as a Snakemake workflow.

Importing the package is cheap on purpose (no torch): the Snakefile imports ``lotto.config`` and
``lotto.paths`` at parse time, and every cluster job re-parses it.
"""

__version__ = "0.1.0"
