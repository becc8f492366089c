"""The controlled synthetic reasoning world (DESIGN §1.3): dependency-graph problems, traces and verification.

- ``world``: graphs, values linear in the reverse-mode unknown, the op count.
- ``render``: contexts, natural and compact renderings, gold traces, raw documents, the rule-based annotation.
- ``expr``: the safe evaluator of trace expressions; ``verify``: process verification and rewards (one
  implementation for evaluation and RL), and the verb ``midtrain synth verify``.
- ``mix``: op presets and mixtures, context mixtures, replay mixes.
- verbs, one file each: ``generate`` (``midtrain synth generate``, ``SynthConfig``, ``generate_problems``),
  ``verify``, ``stats``, ``diagnose``, ``select``; ``summary`` aggregates verified samples for evaluation,
  ``credit`` locates a trace's first wrong step for RL credit assignment.

Import from the defining module (``from midtrain.synth.generate import generate_problems``): this package file
re-exports nothing, so that importing one piece never loads the others.
"""
