"""The quality gate: perplexity and lm-evaluation-harness tasks, reference against quantized.

`request.py` declares the settings once (`EvalRequest`); `gate.evaluate` scores a plan (ModelOpt
fake quantization) or an exported checkpoint (`checkpoint.py` rebuilds it from the files);
`perplexity.py` and `lm_eval.py` are the two scorers.
"""
