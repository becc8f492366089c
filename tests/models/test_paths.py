"""Model references: a local-looking path that does not exist is a one-line error at once, never a Hub lookup."""

from __future__ import annotations

import json
import os

import pytest

from midtrain.cli import main
from midtrain.data.jsonl import write_jsonl
from midtrain.errors import MidtrainError
from midtrain.models.paths import looks_local, require_model_path
from midtrain.synth.generate import generate_problems


@pytest.mark.parametrize(
    "ref, local",
    [
        ("./runs/sft", True),
        ("../runs/sft", True),
        ("/abs/path", True),
        ("~/models/m", True),
        (".", True),
        ("Qwen/Qwen3-8B", False),  # a Hub id: no directory "Qwen" here
        ("gpt2", False),  # a bare name has no directory part to check
    ],
)
def test_what_looks_local(ref, local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert looks_local(ref) is local


def test_an_existing_parent_directory_makes_a_path_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_local("runs/sfy")
    (tmp_path / "runs").mkdir()
    assert looks_local("runs/sfy")  # the typo of runs/sft next to runs/
    with pytest.raises(MidtrainError, match=r"^model 'runs/sfy': no such file or directory \(a local path"):
        require_model_path("runs/sfy")
    (tmp_path / "runs" / "sfy").mkdir()
    require_model_path("runs/sfy")  # exists: fine
    require_model_path("Qwen/Qwen3-8B")  # a Hub id is left to the Hub


def no_hub(monkeypatch) -> list[str]:
    """Record any attempt to resolve a model or tokenizer through transformers (which would go to the Hub)."""
    import transformers

    asked: list[str] = []

    def refuse(name):
        def call(ref, *a, **k):
            asked.append(f"{name}({ref})")
            raise OSError("the test forbids Hub lookups")

        return call

    for cls in ("AutoConfig", "AutoTokenizer", "AutoModelForCausalLM"):
        monkeypatch.setattr(getattr(transformers, cls), "from_pretrained", refuse(cls))
    return asked


def test_a_typo_in_a_local_model_path_fails_at_once_in_every_stage(tmp_path, monkeypatch, capsys, corpus):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    asked = no_hub(monkeypatch)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "problem": "1+1?", "answer": "2"}) + "\n")
    problems = tmp_path / "p.jsonl"
    write_jsonl(problems, generate_problems(n=2, ops="2-3", render="compact", modulus=10, order="dependency", seed=3))
    typo = os.path.join("runs", "sfy")
    runs = {
        "eval": ["eval", typo, "--data", str(data)],
        "pretrain": ["pretrain", "--model", f"./{typo}", "--corpus.files", str(corpus), "--seq-len", "32", "--max-steps", "1"],
        "synth diagnose": ["synth", "diagnose", typo, "--problems", str(problems)],
        "analyze cka": ["analyze", "cka", typo, typo, "--probe", str(corpus)],
    }
    for name, argv in runs.items():
        out = tmp_path / name.replace(" ", "-")
        assert main([*argv, "--out", str(out)]) == 2, name
        err = capsys.readouterr().err.strip()
        said = (
            "input not found"
            if name in ("synth diagnose", "analyze cka")
            else "no such file or directory (a local path, so the Hugging Face Hub is not asked)"
        )
        assert "\n" not in err and said in err, (name, err)
        assert typo in err and not out.exists(), name
    assert asked == []  # nothing reached transformers' resolution (and so the Hub)
