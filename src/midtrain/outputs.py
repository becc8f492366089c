"""The names of the files one stage reads in another stage's run directory, on the floor below both.

``midtrain eval`` writes ``samples.jsonl`` (one scored completion per line) and ``summary.json``; ``eval score``
rewrites them and ``synth select`` reads the samples of a synthetic eval. A reader imports the name from here rather
than from the writer, so that a lower stage (``synth``) never imports a higher one (``eval``) for a constant.
"""

from __future__ import annotations

SAMPLES = "samples.jsonl"  # midtrain eval: one line per (benchmark, id, sample)
SUMMARY = "summary.json"  # midtrain eval: the metrics of every benchmark and the synthetic set

__all__ = ["SAMPLES", "SUMMARY"]
