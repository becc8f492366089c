"""The rule-based annotator of ``midtrain augment`` (``--annotator.backend programmatic``): thoughts without a model.

The programmatic backend (:class:`midtrain.llm.backends.ProgrammaticBackend`) answers each prompt with a function
its caller supplies; :class:`RuleAnnotator` is augment's. It reads the text back out of the filled annotator prompt
(:func:`prompt_text`: any template with a ``{text}`` placeholder, the shipped ones or a user's) and answers as an
annotator model would:

- rewrite mode (``prompts/augment.txt``): the text itself with up to ``max_thoughts`` thoughts at evenly spaced
  sentence ends (:func:`programmatic_annotation`), so that it passes the preservation check;
- insert mode (``prompts/insert.txt``, the text so far): one deterministic thought naming the last words read
  (:func:`programmatic_thought`).

Synthetic problems (records with a ``graph``) are not prompted at all under this annotator: the synthetic world
annotates them whole, its gold trace as the thought (:func:`annotate_problem`, by
:func:`midtrain.synth.render.annotate`). Used by the tests and the CPU demo, where any model would be too slow or
too random to assert on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from midtrain.augment.chunking import sentences
from midtrain.errors import MidtrainError
from midtrain.llm.prompts import fill_template
from midtrain.synth import render
from midtrain.thoughts import THINK_CLOSE, THINK_OPEN

PLACEHOLDER = "{text}"  # what fill_template replaces, every occurrence, in the annotator templates


def prompt_text(template: str, prompt: str) -> str | None:
    """The text that ``fill_template(template, text=...)`` put into ``prompt``, or None if ``prompt`` is not
    ``template`` filled with some text.

    The template's fixed parts are known, so the text's length is (len(prompt) − fixed) / occurrences, and the
    candidate is checked by filling the template again: exact for any text, tags and placeholders inside included.
    """
    pieces = template.split(PLACEHOLDER)
    k = len(pieces) - 1
    spare = len(prompt) - sum(map(len, pieces))
    if k < 1 or spare < 0 or spare % k:
        return None
    start = len(pieces[0])
    text = prompt[start : start + spare // k]
    return text if fill_template(template, text=text) == prompt else None


def programmatic_annotation(text: str, max_thoughts: int = 4) -> str:
    """Rule-based annotation: up to ``max_thoughts`` thoughts at evenly spaced sentence ends."""
    sents = sentences(text)
    k = max(1, min(max_thoughts, len(sents)))
    after = sorted({max(1, round((j + 1) * len(sents) / k)) for j in range(k)})  # sentence counts before a thought
    out, done = [], 0
    for m in after:
        out.append("".join(sents[done:m]))
        words = "".join(sents[:m]).split()[-6:]
        out.append(f'{THINK_OPEN}So far: "{" ".join(words)}". The text should go on from this point.{THINK_CLOSE}')
        done = m
    out.append("".join(sents[done:]))
    return "".join(out)


def programmatic_thought(text_so_far: str) -> str:
    """Rule-based answer to the insert-mode prompt: one thought naming the last words read (deterministic)."""
    words = " ".join(text_so_far.split()[-6:])
    return f'Having read up to "{words}", I expect the next sentences to build on this point.'


@dataclass(frozen=True)
class RuleAnnotator:
    """``respond(prompt)`` of the programmatic backend for augment's annotator ``template`` in ``mode``."""

    template: str
    mode: Literal["rewrite", "insert"] = "rewrite"
    max_thoughts: int = 4

    def __call__(self, prompt: str) -> str:
        text = prompt_text(self.template, prompt)
        if text is None:  # a failed item with this reason, never a made-up answer
            raise MidtrainError("rule annotator: the prompt is not the annotator template filled with a text")
        return programmatic_thought(text) if self.mode == "insert" else programmatic_annotation(text, self.max_thoughts)


def annotate_problem(problem: dict[str, Any]) -> dict[str, Any]:
    """A synthetic problem (with ``graph``) → its augmented record, by :func:`midtrain.synth.render.annotate`."""
    return render.annotate(problem)


__all__ = ["PLACEHOLDER", "RuleAnnotator", "annotate_problem", "programmatic_annotation", "programmatic_thought", "prompt_text"]
