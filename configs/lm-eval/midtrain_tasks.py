"""lm-evaluation-harness hooks of midtrain's benchmark tasks (``midtrain_<benchmark>.yaml`` beside this file).

lm-eval imports this file by path (``!function midtrain_tasks.…`` in the YAMLs), so midtrain must be importable
in lm-eval's environment: install both in one (``pip install -e . "lm-eval[hf]"``).

- :func:`load_split`: the benchmark's test records, read by midtrain's own loader
  (:func:`midtrain.eval.benchmarks.load_benchmark`, ``source="local"``) from midtrain's data root: ``data_root``
  from ``--metadata '{"data_root": "DIR"}'``, else ``$MIDTRAIN_DATA_ROOT``, else ``shared/benchmarks`` beside the
  checkout. Never the Hugging Face hub; the records keep their ``id``, so ``midtrain eval score --format lm-eval``
  reads the ``--log_samples`` output by id.
- :func:`process_math` / :func:`process_choice`: midtrain's scorer (:func:`midtrain.eval.scoring.score`, the one
  ``midtrain eval`` uses), on a completion whose prompt opened ``<think>`` (only the text after ``</think>`` is
  scored). Metrics: ``acc`` (correct) and ``no_answer`` (nothing extractable).
"""

from __future__ import annotations

from typing import Any

import datasets

from midtrain.eval.benchmarks import load_benchmark
from midtrain.eval.scoring import Kind, score


def load_split(benchmark: str, data_root: str = "", **_: Any) -> datasets.DatasetDict:
    """``{"test": records}`` of a registered benchmark; lm-eval also passes the task's metadata (ignored)."""
    _, records, _ = load_benchmark(benchmark, root=data_root or None, source="local")
    rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]  # not the loader's _file/_line
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def _process(doc: dict[str, Any], results: list[str], kind: Kind) -> dict[str, float]:
    s = score(results[0], doc, kind, thinking=True)  # the prompt ends inside <think>
    return {"acc": float(s.correct), "no_answer": float(s.answer is None)}


def process_math(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return _process(doc, results, "math")


def process_choice(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return _process(doc, results, "choice")
