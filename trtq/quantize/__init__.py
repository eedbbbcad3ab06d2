"""The quantize stage: a plan -> ModelOpt quant_cfg -> calibrated model -> HF and TensorRT-LLM checkpoints.

`request.py` declares the settings once (`QuantizeRequest`, and `CalibrationSettings`, which
`trtq eval --plan` shares); `api.quantize_from_plan` checks everything cheap before the model
loads; `quant_cfg.py` turns the plan's per-layer formats into ModelOpt's ordered `quant_cfg`,
`apply.py` calibrates stage by stage and exports.
"""

import warnings

# ModelOpt 0.47 warns at import that it was not tested with transformers 5.x; trtq's
# quantizer-agreement and export tests run on exactly this pair, so the warning is noise.
warnings.filterwarnings("ignore", message=r"transformers .* is not tested with current version of modelopt")
