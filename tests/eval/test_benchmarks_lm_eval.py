"""The lm-eval tasks shipped in ``configs/lm-eval/``: valid YAML, one per registered benchmark, midtrain's exact
prompt and scorer, data from midtrain's data root; loaded by lm-eval itself when it is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import pytest
import yaml

from midtrain.eval.benchmarks import REGISTRY, build_prompt, load_benchmark
from shared_support import needs_benchmarks

TASKS = Path(__file__).resolve().parents[2] / "configs" / "lm-eval"
TEMPLATES = {"math": "_midtrain_math_yaml", "choice": "_midtrain_choice_yaml"}


class _Loader(yaml.SafeLoader):
    """YAML with lm-eval's ``!function module.name`` tag, kept as the string ``module.name``."""


_Loader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def task_config(name: str) -> dict[str, Any]:
    """A task's YAML merged over the template it includes, as lm-eval merges them."""
    own = yaml.load((TASKS / f"midtrain_{name}.yaml").read_text(), Loader=_Loader)
    base = yaml.load((TASKS / own.pop("include")).read_text(), Loader=_Loader)
    return {**base, **own}


def hooks() -> Any:
    spec = importlib.util.spec_from_file_location("midtrain_tasks", TASKS / "midtrain_tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(template: str, doc: dict[str, Any]) -> str:
    """``doc_to_text`` as lm-eval renders it (lm_eval.utils.apply_template's environment)."""
    env = jinja2.Environment(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(template).render(**doc)


HAND_MADE = {
    "math": {"id": "m1", "problem": "  What is $1+1$?\n", "answer": "2"},
    "choice": {"id": "c1", "problem": "Which one?", "choices": ["red", "green", "blue", "$x^2$"], "answer": "C"},
}


def test_one_task_per_registered_benchmark_and_nothing_else():
    assert sorted(p.stem for p in TASKS.glob("midtrain_*.yaml")) == sorted(f"midtrain_{b}" for b in REGISTRY)
    m = hooks()
    for name, bench in REGISTRY.items():
        cfg = task_config(name)
        assert cfg["task"] == f"midtrain_{name}" and cfg["dataset_kwargs"] == {"benchmark": name}
        assert cfg["output_type"] == "generate_until" and cfg["test_split"] == "test" and cfg["doc_to_target"] == "answer"
        assert cfg["process_results"] == f"!function midtrain_tasks.process_{bench.kind}"
        assert (TASKS / f"midtrain_{name}.yaml").read_text().startswith(f"# {bench.title} ({bench.file} under midtrain's data root)")
        for key in ("custom_dataset", "process_results"):  # every hook names a function of midtrain_tasks.py
            module, fn = cfg[key].removeprefix("!function ").split(".")
            assert module == "midtrain_tasks" and callable(getattr(m, fn))
        assert {x["metric"] for x in cfg["metric_list"]} == {"acc", "no_answer"}
        assert cfg["generation_kwargs"] == {"until": [], "do_sample": False, "max_gen_toks": 512}


@pytest.mark.parametrize("kind", ["math", "choice"])
def test_prompt_is_midtrains_think_prompt(kind):
    template = yaml.load((TASKS / TEMPLATES[kind]).read_text(), Loader=_Loader)["doc_to_text"]
    doc = HAND_MADE[kind]
    assert render(template, doc) == build_prompt(doc, kind, "think")
    fields = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(template))
    assert fields == ({"problem", "choices"} if kind == "choice" else {"problem"})  # record fields only


def test_hooks_score_like_midtrain():
    m = hooks()
    math, choice = HAND_MADE["math"], HAND_MADE["choice"]
    assert m.process_math(math, ["<think>one and one</think> so \\boxed{2}"]) == {"acc": 1.0, "no_answer": 0.0}
    assert m.process_math(math, ["\\boxed{2} <think>still thinking"]) == {"acc": 0.0, "no_answer": 1.0}
    assert m.process_math(math, ["\\boxed{2}"]) == {"acc": 0.0, "no_answer": 1.0}  # the prompt opened <think>: never closed
    assert m.process_choice(choice, ["<think>blue</think> \\boxed{C}"]) == {"acc": 1.0, "no_answer": 0.0}
    assert m.process_choice(choice, ["<think>hm</think> \\boxed{A}"]) == {"acc": 0.0, "no_answer": 0.0}


@needs_benchmarks
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_tasks_read_the_benchmark_files_of_the_data_root(name):
    split = hooks().load_split(benchmark=name, version=1.0)["test"]  # lm-eval passes the metadata too
    _, records, source = load_benchmark(name)
    assert source.endswith(REGISTRY[name].file) and len(split) == len(records)
    template = task_config(name)["doc_to_text"]
    for i in (0, len(records) // 2, len(records) - 1):
        doc = split[i]
        assert doc["id"] == records[i]["id"] and doc["answer"] == records[i]["answer"]
        assert render(template, doc) == build_prompt(records[i], REGISTRY[name].kind, "think")


@needs_benchmarks
def test_lm_eval_loads_the_tasks():
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'lm-eval[hf]')")
    from lm_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=str(TASKS))
    tasks = get_task_dict([f"midtrain_{b}" for b in REGISTRY], manager)
    assert sorted(tasks) == sorted(f"midtrain_{b}" for b in REGISTRY)
    for name, task in tasks.items():
        bench = REGISTRY[name.removeprefix("midtrain_")]
        doc = next(iter(task.test_docs()))
        assert task.fewshot_context(doc, 0) == build_prompt(doc, bench.kind, "think")
        right = "<think>t</think> \\boxed{" + doc["answer"] + "}"
        assert task.process_results(doc, [right])["acc"] == 1.0
