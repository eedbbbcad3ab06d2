"""The quantize stage: a plan -> ModelOpt quant_cfg -> calibrated model -> HF and TensorRT-LLM checkpoints."""

import warnings

# ModelOpt 0.47 warns at import that it was not tested with transformers 5.x; trtq's
# quantizer-agreement and export tests run on exactly this pair, so the warning is noise.
warnings.filterwarnings("ignore", message=r"transformers .* is not tested with current version of modelopt")
