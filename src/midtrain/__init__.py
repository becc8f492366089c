"""midtrain: install reasoning in language models during mid-training.

The shared floor sits at the top (``cli``, ``stages``, ``config``, ``runs``, ``locks``, ``data``, ``shards``, ``errors``,
``console``, ``metrics``, ``thoughts``, ``plots``); each stage family is a subpackage with one file per verb:
``models``, ``synth``, ``llm``, ``augment``, ``train``, ``eval``, ``analysis``, ``experiment``. The verb table is
:data:`midtrain.stages.STAGES`.
"""

__version__ = "0.1.0"
