"""``midtrain analyze cka`` (midtrain.analysis.cka): linear CKA estimators on hand-made features (full,
minibatch, HSIC) and the collection of hidden states on a tiny model, with its errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from midtrain.analysis.cka import CkaConfig, MinibatchCKA, cka, hsic1, linear_cka, minibatch_cka
from midtrain.cli import main
from midtrain.errors import ConfigError, DataError


# -- CKA estimators --------------------------------------------------------------------------------------------
def _features(n: int, d1: int, d2: int, noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d1, generator=g, dtype=torch.float64) @ torch.diag(torch.linspace(0.5, 2.0, d1, dtype=torch.float64))
    y = x @ torch.randn(d1, d2, generator=g, dtype=torch.float64) + noise * torch.randn(n, d2, generator=g, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("n", [10, 300])  # Gram route (n < d1 + d2) and feature route
def test_cka_self_orthogonal_and_scaling_invariance(n):
    x, y = _features(n, 12, 9, 1.0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    base = linear_cka(x, y)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(3.7 * x, 0.2 * y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x + 5.0, y) == pytest.approx(base, abs=1e-10)  # column centring
    assert 0.0 < base < 1.0
    if n >= 8:
        assert minibatch_cka(x, x, batch_size=max(n // 3, 4)) == pytest.approx(1.0, abs=1e-12)
        mb = minibatch_cka(x, y, batch_size=max(n // 3, 4))
        assert minibatch_cka(2.5 * (x @ q) + 1.0, y, batch_size=max(n // 3, 4)) == pytest.approx(mb, abs=1e-9)


def test_cka_analytic_cases():
    # orthogonal centred columns with equal norms; Y = the first k of d columns → CKA = sqrt(k / d)
    h = torch.linalg.qr(torch.randn(64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    basis = h[:, 1:9] - h[:, 1:9].mean(0)  # 8 columns, re-centred
    basis = torch.linalg.qr(basis)[0] * 3.0  # orthonormal centred columns, norm 3
    for k in (1, 2, 4, 8):
        assert linear_cka(basis, basis[:, :k]) == pytest.approx(math.sqrt(k / 8), abs=1e-10)
    # one feature each: CKA = squared Pearson correlation
    x, y = _features(50, 1, 1, 0.7, seed=4)
    r = torch.corrcoef(torch.stack([x[:, 0], y[:, 0]]))[0, 1].item()
    assert linear_cka(x, y) == pytest.approx(r * r, abs=1e-12)


def test_minibatch_estimator_agrees_with_full():
    x, y = _features(4096, 16, 12, 2.0, seed=1)
    full = linear_cka(x, y)
    mb = minibatch_cka(x, y, batch_size=256, seed=0)
    assert abs(full - mb) < 0.02, (full, mb)
    acc = MinibatchCKA()  # streaming use: the same batches in order give the same value
    order = torch.randperm(4096, generator=torch.Generator().manual_seed(0))
    for s in range(0, 4096, 256):
        acc.update(x[order[s : s + 256]], y[order[s : s + 256]])
    assert acc.value() == pytest.approx(mb, abs=1e-12) and acc.batches == 16


def test_minibatch_estimator_is_unbiased_for_independent_features():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(2048, 64, generator=g), torch.randn(2048, 64, generator=g)
    assert linear_cka(x, y) > 0.02  # the full estimator's small-sample bias (≈ d/n)
    assert abs(minibatch_cka(x, y, batch_size=128)) < 0.01


def test_hsic1_formula_on_small_case():
    # brute-force U-statistic: HSIC₁ equals the mean over distinct (i, j, q, r) of the symmetrised h-function
    import itertools

    x, y = _features(6, 2, 2, 0.5, seed=2)
    k, l = x @ x.T, y @ y.T
    n = 6
    total = 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
    assert hsic1(k, l) == pytest.approx(float(total) / (n * (n - 1) * (n - 2) * (n - 3)), rel=1e-10)


# -- CKA end to end on a tiny model ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    from midtrain.models.init import model_config
    from midtrain.models.tokenizer import TokenizerConfig, train_tokenizer

    root = tmp_path_factory.mktemp("cka")
    texts = [f"Sample {i}: the quick brown fox jumps over {i * 7} lazy dogs, then rests." for i in range(24)]
    corpus = root / "probe.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    math_probe = root / "math.jsonl"
    math_probe.write_text("".join(json.dumps({"problem": f"What is {i} + {i * 3}?"}) + "\n" for i in range(12)))
    train_tokenizer(TokenizerConfig(corpus=[str(corpus)], out=str(root / "tok"), kind="char"))
    from transformers import AutoModelForCausalLM

    from midtrain.models.tokenizer import load_tokenizer

    tok = load_tokenizer(root / "tok")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config("nano", len(tok), pad_token_id=tok.pad_token_id))
    model.save_pretrained(root / "a")
    tok.save_pretrained(root / "a")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(root / "b")
    tok.save_pretrained(root / "b")
    return root


def test_cka_same_model_is_one_and_run_dir(tiny_pair, capsys):
    root = tiny_pair
    out = root / "run"
    code = main(
        [
            "analyze",
            "cka",
            str(root / "a"),
            str(root / "a"),
            "--probe",
            str(root / "probe.jsonl"),
            str(root / "math.jsonl"),
            "--max-examples",
            "12",
            "--max-length",
            "32",
            "--batch-size",
            "4",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layers"] == 5  # embeddings + 4 blocks of the nano preset
    for probe in summary["probes"].values():
        assert probe["rows"] == 12
        assert all(v == pytest.approx(1.0, abs=1e-6) for v in probe["per_layer"])
    assert (out / "cka.json").is_file() and (out / "cka_per_layer.png").stat().st_size > 1000


def test_cka_perturbed_model_token_pooling_and_minibatch(tiny_pair):
    root = tiny_pair
    common = dict(a=str(root / "a"), b=str(root / "b"), probe=[str(root / "probe.jsonl")], max_examples=16, max_length=32, batch_size=8)
    seq = cka(CkaConfig(**common))
    values = next(iter(seq.data["probes"].values()))["per_layer"]
    assert all(0.0 < v < 1.0 + 1e-9 for v in values) and values[0] > 0.5
    tok = cka(CkaConfig(**common, pooling="token", max_tokens_per_sequence=8, estimator="minibatch", minibatch_size=32))
    probe = next(iter(tok.data["probes"].values()))
    assert probe["rows"] == 16 * 8
    assert all(v is not None and v < 1.0 + 1e-9 for v in probe["per_layer"])
    assert "layer" in tok.summary()


def test_cka_synthetic_probe(tiny_pair):
    res = cka(CkaConfig(a=str(tiny_pair / "a"), b=str(tiny_pair / "b"), probe=["synthetic:6"], max_length=48))
    probe = res.data["probes"]["synthetic"]
    assert probe["examples"] == 6 and probe["rows"] == 6 and len(probe["per_layer"]) == 5


def test_cka_errors(tiny_pair):
    root = tiny_pair
    with pytest.raises(ConfigError, match="probe"):
        CkaConfig(a="x", b="y", probe=["synthetic:zero"]).check()
    with pytest.raises(DataError, match="none of the text fields"):
        cka(CkaConfig(a=str(root / "a"), b=str(root / "a"), probe=[str(root / "math.jsonl")], text_fields=["body"], out=str(root / "bad")))
    assert not (root / "bad").exists()
