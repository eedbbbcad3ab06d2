"""Per-layer latency tables. Backends are registered in trtq.profile.backends."""
