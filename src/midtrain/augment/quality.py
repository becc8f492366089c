"""Quality measures of an insert-mode thought: cut off, restating what was just read, or low-information filler.

:func:`midtrain.augment.insert.check_thought` rejects a thought with a named reason when one of these measures
crosses its threshold in :class:`~midtrain.augment.config.InsertConfig`. All are pure functions of strings:

- **Cut off** (``thought_cut_off``): the thought does not end a sentence (:func:`ends_sentence`: ``. ! ? …`` or
  their CJK forms, then optional closing quotes or brackets) and is long enough that the annotator must have hit
  its token budget: at least ``cut_off_fraction × max_new_tokens`` tokens. Backends return text only, so the
  length is counted with the target tokenizer when there is one, else estimated as one token per
  :data:`CHARS_PER_TOKEN` characters (:func:`count_tokens`). A short thought without a final period was ended by
  the model and passes.
- **Restatement** (``thought_restates_text``): the share of the thought's word pairs that also occur among the
  last ``restate_window_words`` words read (:func:`restatement_overlap`). Words are lower-cased and lightly stemmed
  (:func:`stem`: ``flooded``/``floods`` → ``flood``) so inflected copies count; pairs of two function words (``of
  the``) are ignored on both sides, because every English text shares them. Quoting a phrase and then reasoning
  about it stays well under the default threshold; retelling the last sentence does not.
- **Filler** (``thought_filler``): the share of the thought's words that are *distinct, informative* stems
  (:func:`informative_ratio`): not function words (:data:`STOPWORDS`) and not generic talk about reading
  (:data:`GENERIC`: "text", "next", "continue", "interesting", …). "I will keep reading to see what happens next
  in the text" scores 0, circular phrasing that repeats the same few words scores low because repeats count once,
  and a thought that names things from the text scores 0.3 or more.

Simplifications: the word lists are English (other languages fail open: every word counts as informative), the
stemmer only strips ``-ing``/``-ed``/``-es``/``-s``, and the cut-off test does not see the backend's own stop
reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

CHARS_PER_TOKEN = 4  # the usual rate of English BPE text: the estimate when no tokenizer is at hand
_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’»)\]]*$")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")

STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below between
    both but by can could did do does doing down during each either else ever every few for from further had has
    have having he her here hers herself him himself his how however i if in into is it it's its itself just let me
    more most much must my myself neither no nor not now of off on once one only or other our ours ourselves out
    over own same shall she should so some such than that that's the their theirs them themselves then there
    these they this those though through thus to too under until up upon us very was we were what when where
    whether which while who whom whose why will with within without would yet you your yours yourself""".split()
)
GENERIC = frozenset(
    """article author begin begins chapter come comes coming content continue continued continues continuing
    discuss discussed discusses discussing expect expected explain explained explains go goes going happen
    happened happening happens idea ideas important information interesting keep know learn line lines mention
    mentioned mentions maybe next note paragraph part passage perhaps point points probably read reader reading
    ready really say says said section see seem seems sentence sentences something story talk talked talking
    talks tell tells text texts thing things think thinking thought thoughts topic understand understanding
    wonder word words write writer writes writing written""".split()
)


def ends_sentence(text: str) -> bool:
    """Whether ``text`` ends at a sentence end (``. ! ? …``, CJK forms, then optional closing quotes/brackets)."""
    return bool(_SENTENCE_END.search(text.rstrip()))


def count_tokens(text: str, tokenizer: Any = None) -> int:
    """Tokens of ``text`` with ``tokenizer`` (no special tokens), else ``ceil(len / CHARS_PER_TOKEN)``."""
    if tokenizer is not None:
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    return -(-len(text) // CHARS_PER_TOKEN)


def is_cut_off(thought: str, tokens: int, max_new_tokens: int, fraction: float) -> bool:
    """A thought of ``tokens`` tokens that does not end a sentence, at ``≥ fraction`` of the token budget."""
    return not ends_sentence(thought) and tokens >= fraction * max_new_tokens


def stem(word: str) -> str:
    """``word`` without one of the suffixes -ing, -ed, -es, -s (a stem of at least 3 letters stays; -ss stays)."""
    if word.endswith("ss"):
        return word
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (letters and digits, inner apostrophes kept)."""
    return [w.replace("’", "'") for w in _WORD.findall(text.lower())]


def _pairs(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """Adjacent stemmed word pairs, except pairs of two function words."""
    return [(stem(a), stem(b)) for a, b in zip(tokens, tokens[1:]) if not (a in STOPWORDS and b in STOPWORDS)]


def restatement_overlap(thought: str, preceding: str, window_words: int) -> float:
    """Share of the thought's word pairs found among the last ``window_words`` words of ``preceding`` (0 without
    pairs)."""
    mine = _pairs(words(thought))
    if not mine:
        return 0.0
    seen = set(_pairs(words(preceding)[-window_words:]))
    return sum(p in seen for p in mine) / len(mine)


def informative_ratio(thought: str) -> float:
    """Distinct informative stems (neither :data:`STOPWORDS` nor :data:`GENERIC`) per word of ``thought`` (1.0
    without words, so that an empty thought is judged by the other checks)."""
    tokens = words(thought)
    if not tokens:
        return 1.0
    informative = {stem(w) for w in tokens if w not in STOPWORDS and w not in GENERIC}
    return len(informative) / len(tokens)


__all__ = [
    "CHARS_PER_TOKEN",
    "GENERIC",
    "STOPWORDS",
    "count_tokens",
    "ends_sentence",
    "informative_ratio",
    "is_cut_off",
    "restatement_overlap",
    "stem",
    "words",
]
