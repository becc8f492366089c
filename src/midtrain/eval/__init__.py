"""Evaluation: the benchmark registry, math-verify scoring, ``midtrain eval`` (generate + score + summarise) and
``midtrain eval score`` (completions produced elsewhere), and the per-benchmark summaries."""
