"""Training stages: pretraining, SFT mid-training, Dr. GRPO RL."""
