"""`trtq run`: the whole pipeline from one file (pipeline.py), cached (cache.py), quality-gated (select.py).

Nothing heavy here: `trtq --help` imports this package.
"""

STAGES = ("layers", "profile", "sensitivity", "front", "select", "quantize", "eval", "build", "bench", "report")
