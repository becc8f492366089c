"""``midtrain tokenizer train``: a tokenizer trained locally on the corpus, and loading any tokenizer.

Algorithm: byte-level BPE (``kind=bpe``) or byte-level characters with no merges (``kind=char``) with the
``tokenizers`` library. Digits are split one per token so that arithmetic is learnable. The tags ``<question>
</question> <solution> </solution> <answer> </answer> <think> </think>`` are atomic added tokens (never split, and
*kept* when decoding with ``skip_special_tokens=True``, so that rewards and verifiers see them); ``<bos> <eos>
<pad>`` are the special tokens. The post-processor puts ``<bos>`` before every encoded text (``tokenizer(text)``
with the default ``add_special_tokens=True`` gives ``<bos> …`` once), because midtrain trains and generates after a
BOS: plain transformers, pipelines, lm-eval and vLLM then see the model midtrain trained. midtrain's own paths
tokenize with ``add_special_tokens=False`` and prepend the BOS themselves, so they are unchanged. The chat
template is the plain-text one (:data:`PLAIN_CHAT_TEMPLATE`): ``<bos>`` and the messages' text with no role
markers, each assistant turn closed by ``<eos>``, as the model saw documents in training. Saved with ``save_pretrained`` so ``AutoTokenizer.from_pretrained(DIR)`` loads it
offline. :func:`load_tokenizer` loads any local directory or hub id; ``trust_remote_code`` stays off unless the
caller turns it on.

Launch: ``midtrain tokenizer train --corpus data.jsonl --out runs/tok --vocab-size 512``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from midtrain.config import Config, param
from midtrain.console import log
from midtrain.errors import ConfigError, DataError, MidtrainError
from midtrain.models.paths import require_model_path
from midtrain.runs import Result, open_run
from midtrain.thoughts import THINK_OPEN

BOS, EOS, PAD = "<bos>", "<eos>", "<pad>"
TAGS = ["<question>", "</question>", "<solution>", "</solution>", "<answer>", "</answer>", "<think>", "</think>"]
# The first line marks the template as midtrain's own (eval's prompt_format=auto keeps the plain '<think>' prompt
# for such a model: its "chat" is raw text, and it was trained on "Question: … Answer: <think>" documents).
PLAIN_TEMPLATE_MARK = "{#- midtrain plain-text chat template -#}"
PLAIN_CHAT_TEMPLATE = (
    PLAIN_TEMPLATE_MARK + "{{ bos_token }}{% for m in messages %}{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
)


@dataclass
class TokenizerConfig(Config):
    corpus: list[str] = param(
        [], "Corpus files (.jsonl/.jsonl.gz, .txt, .parquet, datasets dir): text, prompt+completion or augmented records."
    )
    out: str = param("", "Output directory for the tokenizer.", path="dir")
    vocab_size: int = param(512, "Target vocabulary size including the 256 byte symbols and special tokens (bpe).", ge=1, le=1 << 20)
    kind: Literal["bpe", "char"] = param("bpe", "bpe: byte-level BPE; char: byte-level symbols only, no merges.")
    text_field: str = param("text", "Field holding the text in JSONL/Parquet records.")
    model_max_length: int = param(2048, "Maximum sequence length recorded in the tokenizer config.", ge=1)
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if not self.corpus:
            raise ConfigError("key 'corpus': give at least one corpus file")
        if not self.out:
            raise ConfigError("key 'out': give an output directory")
        if self.kind == "bpe" and self.vocab_size < 256 + len(TAGS) + 3:
            raise ConfigError(f"key 'vocab_size': must be at least {256 + len(TAGS) + 3} for a byte-level BPE")


def _build_tokenizer(texts, vocab_size: int, kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    special = [BOS, EOS, PAD]
    size = vocab_size if kind == "bpe" else 256 + len(special)
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        min_frequency=2,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def bos_post_processor(bos_id: int):
    """A post-processor that puts ``<bos>`` (id ``bos_id``) before a text, and once before a pair."""
    from tokenizers.processors import TemplateProcessing

    return TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B:1", special_tokens=[(BOS, bos_id)])


def leading_bos(tokenizer: Any) -> list[int]:
    """``[bos_id]`` when documents and prompts start with BOS for this tokenizer, else ``[]``.

    The tokenizer's own encoding decides: BOS is used when ``tokenizer(text)`` puts it first (midtrain's tokenizers,
    Llama, Gemma). SmolLM2 and Qwen name ``<|im_start|>``/``<|endoftext|>`` as BOS but never add it: there it is
    a chat marker, and prepending it to raw text would train and prompt the model on what it never saw. Checkpoints
    of midtrain tokenizers made before the BOS post-processor (``<bos>`` and ``<think>`` in the vocabulary) keep
    the BOS they were trained with.
    """
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    if ids and ids[0] == bos:
        return [bos]
    legacy = tokenizer.bos_token == BOS and THINK_OPEN in tokenizer.get_vocab()
    return [bos] if legacy else []


def is_plain_chat_template(tokenizer) -> bool:
    """Whether ``tokenizer``'s chat template is midtrain's plain-text one (a midtrain-trained model)."""
    template = getattr(tokenizer, "chat_template", None)
    return isinstance(template, str) and template.startswith(PLAIN_TEMPLATE_MARK)


def wrap_tokenizer(tok, model_max_length: int = 2048):
    """A ``PreTrainedTokenizerFast`` around a ``tokenizers.Tokenizer`` with our tags, special tokens, BOS
    post-processor and plain-text chat template."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    tok.post_processor = bos_post_processor(tok.token_to_id(BOS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=model_max_length)
    fast.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAGS])
    fast.chat_template = PLAIN_CHAT_TEMPLATE
    return fast


def train_tokenizer(cfg: TokenizerConfig) -> Result:
    """Train and save a tokenizer (see module docstring)."""
    from midtrain.data.pairs import read_pairs  # the corpus readers load only when a tokenizer is trained

    # any training records: a text field, prompt + completion, or augmented chunks; fails before the out dir exists
    texts = [p + b for p, b in read_pairs(cfg.corpus, text_field=cfg.text_field, what="corpus")]
    if not any(t.strip() for t in texts):  # BPE would learn no merge: only the 256 byte symbols and the tags
        raise DataError(f"empty corpus: {', '.join(cfg.corpus)} holds only whitespace, no text to train a tokenizer on")
    with open_run(cfg.out, "tokenizer", cfg, {f"corpus[{i}]": p for i, p in enumerate(cfg.corpus)}, overwrite=cfg.overwrite) as run:
        if run.cached:
            return Result.of(run)
        tok = _build_tokenizer(texts, cfg.vocab_size, cfg.kind)
        fast = wrap_tokenizer(tok, cfg.model_max_length)
        try:
            fast.save_pretrained(str(run.path))
        except Exception as e:  # the tokenizers library raises a bare Exception for OS errors (a full disk)
            raise MidtrainError(f"{run.path}: cannot write the tokenizer ({str(e).splitlines()[0][:200]})") from None
        n_chars = sum(len(t) for t in texts)
        n_tokens = sum(len(e.ids) for e in tok.encode_batch(texts[:2000]))
        sample_chars = sum(len(t) for t in texts[:2000])
        metrics = {
            "vocab_size": len(fast),
            "documents": len(texts),
            "characters": n_chars,
            "chars_per_token": round(sample_chars / max(n_tokens, 1), 3),
        }
        run.finish(metrics)
        log(f"tokenizer: vocab {len(fast)} ({cfg.kind}), {metrics['chars_per_token']} chars/token → {run.path}")
        return Result.of(run)


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False):
    """The tokenizer of a checkpoint or tokenizer directory (or Hub id), with a pad token; a local-looking path that
    does not exist is a one-line error at once (:func:`midtrain.models.paths.require_model_path`)."""
    from transformers import AutoTokenizer

    require_model_path(path, "tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise MidtrainError(f"cannot load a tokenizer from '{path}': {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
