"""The quality gate: perplexity and lm-evaluation-harness tasks, reference against quantized."""
