"""Per-layer latency tables: (gpu, GEMM shape, format, tokens) -> ns, with provenance.

A new backend is one factory in `backends.py` (the explicit registry, by name) and its module here
(`roofline.py`, `cpu.py`, `cuda.py`, `aiconfigurator.py`); `harness.py` times and summarises
kernels for the measuring ones. A new GPU needs no code here: add it to profiles/gpus.yaml (see
trtq.registry). `request.py` declares `trtq profile`'s settings once (`ProfileRequest`).
"""
