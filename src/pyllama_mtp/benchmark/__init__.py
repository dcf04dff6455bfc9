"""``pyllama-mtp bench``: our draft-MTP vs upstream llama.cpp's loop vs Hugging Face, side by side.

:mod:`.shapes` builds the pairs (Gemma-4 geometry, random weights) and the acceptance regimes,
:mod:`.contenders` times each contender, :mod:`.harness` runs them all in one process tree and
:mod:`.report` holds the result schema, the ideal speed-up model, the plot and the table. This is
the harness that ships with the package; the repository's ``bench/`` folder holds studies built on it.
"""

from __future__ import annotations

from .harness import Options, run, write
from .report import SCHEMA_VERSION, ideal_speedup, markdown_table, validate

__all__ = ["SCHEMA_VERSION", "Options", "ideal_speedup", "markdown_table", "run", "validate", "write"]
