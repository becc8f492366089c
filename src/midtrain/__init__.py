"""midtrain: install reasoning in language models during mid-training.

Stages (each a module named by its verb, each a ``run(cfg) -> Result``): ``models`` (tokenizer train, model
init), ``synth`` (the controlled world), ``train.pretrain`` / ``train.sft`` / ``train.rl``, ``augment``,
``judge``, ``evaluate``, ``analysis``, ``experiment``, ``report``.
"""

__version__ = "0.1.0"
