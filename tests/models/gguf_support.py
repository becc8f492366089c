"""A tiny llama GGUF written with the ``gguf`` package's writer: what ``midtrain model import`` reads, in kilobytes.

Byte-level BPE vocabulary (the 256 byte symbols, one merge, three special tokens), one transformer block of width
16, fp32 tensors under llama.cpp's names, and a two-line chat template.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


def write_tiny_gguf(
    path: Path, *, arch: str = "llama", d: int = 16, ff: int = 32, heads: int = 2, kv_heads: int = 1, seed: int = 0
) -> Path:
    import gguf
    import numpy as np
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(d // heads)
    b2u = bytes_to_unicode()
    chars = [b2u[b] for b in range(256)]
    h, i = b2u[ord("H")], b2u[ord("i")]
    tokens = ["<s>", "</s>", "<unk>", *chars, h + i]  # a merge's result must be in the vocabulary
    types = [gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.UNKNOWN] + [gguf.TokenType.NORMAL] * (len(chars) + 1)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{h} {i}"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_unk_token_id(2)
    w.add_pad_token_id(1)
    w.add_chat_template(CHAT_TEMPLATE)
    rng = np.random.default_rng(seed)
    hd = d // heads

    def rand(name: str, rows: int, cols: int) -> None:  # numpy order [out, in]; GGUF stores the shape reversed
        w.add_tensor(name, (rng.standard_normal((rows, cols)) * 0.3).astype(np.float32))

    rand("token_embd.weight", len(tokens), d)
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(d, np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(d, np.float32))
    rand("blk.0.attn_q.weight", d, d)
    rand("blk.0.attn_k.weight", kv_heads * hd, d)
    rand("blk.0.attn_v.weight", kv_heads * hd, d)
    rand("blk.0.attn_output.weight", d, d)
    rand("blk.0.ffn_gate.weight", ff, d)
    rand("blk.0.ffn_up.weight", ff, d)
    rand("blk.0.ffn_down.weight", d, ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
