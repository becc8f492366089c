"""The rule-based annotator: the text read back from any filled template, answers that pass the checks, the
programmatic backend wired through ``respond=``, and a custom template that the shipped markers would not find."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midtrain.augment.augment import annotator_backend, read_augmented, run, uses_rules
from midtrain.augment.config import AugmentConfig
from midtrain.augment.rules import RuleAnnotator, annotate_problem, programmatic_annotation, programmatic_thought, prompt_text
from midtrain.errors import MidtrainError
from midtrain.llm.backends import ProgrammaticBackend
from midtrain.llm.prompts import fill_template, load_prompt
from midtrain.synth.generate import generate_problems
from midtrain.thoughts import strip_thoughts, validate_answer

TEXT = "One sentence here. Another one follows. And a third. A fourth closes it."


@pytest.mark.parametrize("name", ["augment", "insert"])
@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=80))
def test_the_text_comes_back_out_of_a_filled_shipped_template(name, text):
    template = load_prompt(name)
    assert prompt_text(template, fill_template(template, text=text)) == text  # tags, braces, "{text}" included


def test_templates_with_several_placeholders_and_foreign_prompts():
    template = "A {text} B\n{text}\n"
    assert prompt_text(template, fill_template(template, text="x {text} y")) == "x {text} y"
    assert prompt_text(template, "A x B\ny\n") is None  # the two copies differ: not this template filled
    assert prompt_text(template, "something else entirely") is None
    assert prompt_text("no placeholder", "no placeholder") is None


def test_rewrite_answers_pass_the_preservation_check():
    template = load_prompt("augment")
    answer = RuleAnnotator(template)(fill_template(template, text=TEXT))
    out = validate_answer(TEXT, answer)
    assert answer == programmatic_annotation(TEXT) and out.status == "accepted" and out.thoughts == 4
    assert strip_thoughts(answer) == TEXT
    assert validate_answer(TEXT, programmatic_annotation(TEXT, max_thoughts=2)).thoughts == 2


def test_insert_answers_name_the_last_words_read():
    template = load_prompt("insert")
    answer = RuleAnnotator(template, "insert")(fill_template(template, text=TEXT))
    assert answer == programmatic_thought(TEXT) and '"a third. A fourth closes it."' in answer


def test_a_prompt_of_another_template_fails_that_item():
    backend = ProgrammaticBackend(RuleAnnotator(load_prompt("augment")))
    (out,) = backend.generate(["a judge prompt, say"], max_new_tokens=1, errors="return")
    assert isinstance(out, MidtrainError) and "not the annotator template" in str(out)


def test_the_stage_builds_the_programmatic_annotator_with_its_own_rules(tmp_path, prose_corpus, tokenizer_dir):
    custom = tmp_path / "mine.txt"  # no BEGIN/END marker lines at all: the rule annotator reads the template itself
    custom.write_text("Add thoughts in <think> tags to this:\n{text}\nThanks.")
    cfg = AugmentConfig.from_dict(
        {"input": [str(prose_corpus)], "out": str(tmp_path / "aug"), "tokenizer": str(tokenizer_dir), "prompt": str(custom)}
    )
    backend = annotator_backend(cfg, custom.read_text())
    assert isinstance(backend, ProgrammaticBackend) and isinstance(backend.respond, RuleAnnotator) and uses_rules(cfg)
    m = run(cfg).metrics
    assert m["chunks"] > 0 and m["accepted"] == m["chunks"]
    assert all(r["annotator"] == "programmatic" for r in read_augmented(cfg.out))


def test_synthetic_problems_are_annotated_by_their_gold_trace():
    (problem,) = generate_problems(1, seed=3, ops="2-3")
    rec = annotate_problem(problem)
    assert rec["annotator"] == "programmatic" and "".join(s["text"] for s in rec["segments"]) == rec["chunk"]
    assert any(s["thought"] for s in rec["segments"])
