"""Language safety: safety world, tiny LMs, judges, SFT/DPO/RL training and safety evaluation."""
