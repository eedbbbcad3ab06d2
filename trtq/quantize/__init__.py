"""The quantize stage: a plan -> ModelOpt quant_cfg -> calibrated model -> HF and TensorRT-LLM checkpoints."""
