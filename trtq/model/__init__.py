"""Models: built-in aliases and shipped configs (zoo), and the layer graph (layers, families).

A new model family (a Hugging Face `model_type`) is one `FamilyAdapter` in `families.ADAPTERS`: its
attention/MLP layout, biases and MoE layout, from which the layer graph is read off config.json
without torch. A new built-in alias is an entry in `zoo.py` with its config under `configs/`.
"""
