"""midtrain: install reasoning in language models during mid-training.

The shared floor sits at the top (``stages``, ``config``, ``runs``, ``fileio``, ``locks``, ``data``, ``shards``,
``errors``, ``console``, ``metrics``, ``thoughts``, ``plots``, …) beside the entry point ``cli``; each stage family is a
subpackage with one file per verb, ranked so that imports point down: ``models`` < {``llm``, ``synth``} <
{``augment``, ``eval``} < ``train`` < ``analysis`` < ``experiment`` (CONTRIBUTING.md). The verb table is
:data:`midtrain.stages.STAGES`.
"""

__version__ = "0.1.0"
