"""The build stage: a trtq checkpoint checked against TensorRT-LLM, and the commands that serve it.

`checkpoint.py` reads what `trtq quantize` wrote; `trtllm.py` plans the build for the runtime
(PyTorch backend by default, `trtllm-build` engines for the legacy runtimes); `llm_api.py` writes the
LLM API options. A new runtime is data (profiles/runtimes.yaml, see trtq.registry), not code here.
"""
