"""Per-layer, per-format quality cost Omega: weight, Hessian, Fisher and AutoQuantize methods.

`request.py` declares the settings once (`SensitivityRequest`), `api.compute_sensitivity` runs the
method it names; each method is one module (`weight.py`, `hessian.py`, `fisher.py`,
`autoquantize.py`) over the reference quantizers in `quantizers.py`/`operands.py`. A new method is a
module, a `method` choice in `SensitivityRequest` and one branch in `compute_sensitivity`.
"""
