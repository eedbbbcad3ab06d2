"""The serving step: TTFT, TPOT, throughput and KV capacity of a plan on a GPU.

`trtq.predict.step` holds the step model and the scheduling model, `kernels` the kernel
latencies (aiconfigurator-core's compiled engine over NVIDIA's measured tables, or a trtq
profile artifact for the GEMMs), `architecture` the decoder block without torch. A new model
family's attention/MoE layout comes from trtq.model.families; a new GPU from profiles/gpus.yaml.
"""
