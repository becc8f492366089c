"""Thinking augmentation (DESIGN §1.1 steps 1–3): chunking, the annotator loop with its preservation check
(``midtrain augment``), the SFT/RL split (``augment split``), RL mid-training suffix tasks (``augment tasks``) and
the datatrove runner that shards augmentation over a cluster."""
