"""Models: built-in aliases and shipped configs (zoo), and the layer graph (layers)."""
