"""Tokenizers (``midtrain tokenizer train``), tiny-model presets and checkpoint loading (``midtrain model init``),
and batched generation with a KV cache."""
