"""`trtq run`: the whole pipeline from one file (pipeline.py), cached (cache.py), quality-gated (select.py)."""
