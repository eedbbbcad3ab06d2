"""The bench stage: serve a build, drive it with a load generator, record what it measured.

`serve.py` owns the trtllm-serve process lifecycle (`process_group.py`), `loadgen.py` builds the
load generator's command (AIPerf), `runner.py` runs the sweep, `offline.py` runs trtllm-bench and
`ingest.py` reads GenAI-Perf / AIPerf exports into the bench artifact.
"""
