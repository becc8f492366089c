from midtrain.synth.diagnose import label_compact, skill_accuracy, trace_and_direct_accuracy
from midtrain.synth.generate import generate_problems


def test_labels_of_a_forward_compact_trace():
    c = "a=2.b=3*a=3*2=6.</think><answer>6</answer>"
    lab = label_compact(c)
    assert len(lab) == len(c)
    by = lambda i: lab[i]  # noqa: E731
    assert by(0) == "plan" and by(1) == "format" and by(2) == "fact" and by(3) == "format"
    assert [lab[i] for i in range(4, 15)] == ["plan", "format", "fact", "fact", "fact", "format", "copy", "copy", "copy", "format", "arith"]
    assert lab[c.index("<answer>") + len("<answer>")] == "answer"
    assert lab[c.index("</think>")] == "format"


def test_reverse_clause_is_solve():
    lab = label_compact("m=1.n=l+m=l+1.l+1=7:l=6.</think><answer>6</answer>")
    s, f = "solve", "format"
    assert lab[14:23] == [s, s, s, f, s, f, s, f, s]  # l+1=7:l=6
    assert lab[4] == "plan" and lab[6:9] == ["fact"] * 3 and lab[10:13] == ["arith"] * 3


def test_diagnostics_run_on_a_tiny_model(nano_model):
    from midtrain.models.init import load_model
    from midtrain.models.tokenizer import load_tokenizer

    probs = generate_problems(n=6, ops="2-3", render="compact", modulus=10, order="dependency", seed=1)
    model, tok = load_model(nano_model), load_tokenizer(nano_model)
    acc = skill_accuracy(model, tok, probs, batch_size=4)
    assert set(acc) <= {"plan", "fact", "copy", "arith", "solve", "answer", "format"} and "arith" in acc
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    res = trace_and_direct_accuracy(model, tok, probs, max_new_tokens=8, batch_size=4)
    assert res["trace_acc"] == 0.0 and set(res["by_op"]) <= {2, 3}


# -- midtrain synth diagnose ------------------------------------------------------------------------------------
def _write_problems(path, **kw):
    from midtrain.data.jsonl import write_jsonl

    recs = generate_problems(**{"n": 16, "ops": "2-8", "render": "compact", "modulus": 10, "order": "dependency", "seed": 3, **kw})
    write_jsonl(path, recs)
    return recs


def test_synth_diagnose_writes_a_cached_run(nano_model, tmp_path, quiet):
    import json

    from midtrain.synth.diagnose import SKILLS, SynthDiagnoseConfig, diagnose

    recs = _write_problems(tmp_path / "p.jsonl")
    cfg = SynthDiagnoseConfig(
        model=str(nano_model), problems=[str(tmp_path / "p.jsonl")], n_per_range=4, batch_size=4, threads=1, out=str(tmp_path / "diag")
    )
    res = diagnose(cfg)
    assert not res.cached
    d = json.loads((tmp_path / "diag" / "diagnose.json").read_text())
    assert d["model"] == str(nano_model) and set(d["ranges"]) == {"id", "edge"}  # no op in 9-12: hard skipped
    for name, (lo, hi) in {"id": (2, 5), "edge": (6, 8)}.items():
        r = d["ranges"][name]
        assert r["ops"] == [lo, hi] and r["n"] == min(4, sum(lo <= p["op"] <= hi for p in recs))
        assert 0.0 <= r["trace_acc"] <= 1.0 and 0.0 <= r["direct_acc"] <= 1.0
        assert r["skills"] and set(r["skills"]) <= set(SKILLS) and all(0.0 <= v <= 1.0 for v in r["skills"].values())
        assert sum(v["n"] for v in r["by_op"].values()) == r["n"] and all(lo <= int(op) <= hi for op in r["by_op"])
        assert res.metrics[f"{name}/n"] == r["n"] and res.metrics[f"{name}/trace_acc"] == r["trace_acc"]
        assert res.metrics[f"{name}/direct_acc"] == r["direct_acc"]
    before = {p.name: p.read_bytes() for p in (tmp_path / "diag").iterdir()}
    again = diagnose(cfg)
    assert again.cached and again.metrics == res.metrics
    assert {p.name: p.read_bytes() for p in (tmp_path / "diag").iterdir()} == before


def test_synth_diagnose_cli_missing_problems_is_exit_2(nano_model, tmp_path, capsys, quiet):
    from midtrain.cli import main

    out = tmp_path / "diag"
    code = main(["synth", "diagnose", str(nano_model), "--problems", str(tmp_path / "absent.jsonl"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "absent.jsonl" in err and err.strip().count("\n") == 0
    assert not out.exists()
    assert main(["synth", "diagnose", str(nano_model), "--out", str(out)]) == 2  # no problems: a config error
    assert "key 'problems'" in capsys.readouterr().err and not out.exists()


def test_synth_diagnose_config_checks():
    import pytest

    from midtrain.errors import ConfigError
    from midtrain.synth.diagnose import SynthDiagnoseConfig

    base = {"model": "m", "problems": ["p.jsonl"], "out": "o"}
    assert SynthDiagnoseConfig.from_dict(base).ranges() == {"id": [2, 5], "edge": [6, 8], "hard": [9, 12]}
    assert SynthDiagnoseConfig.from_dict({**base, "ops": {"ranges": {"x": [3, 4]}}}).ranges() == {"x": [3, 4]}
    paper = {"id": [2, 10], "edge": [11, 14], "hard": [15, 20]}
    assert SynthDiagnoseConfig.from_dict({**base, "ops": {"scale": "paper"}}).ranges() == paper
    for bad, key in [
        ({"model": ""}, "model"),
        ({"out": ""}, "out"),
        ({"problems": []}, "problems"),
        ({"n_per_range": 0}, "n_per_range"),
        ({"ops": {"ranges": {"x": [5, 2]}}}, "ops.ranges.x"),
        ({"op_ranges": {"x": [3, 4]}}, "op_ranges' is now 'ops.ranges"),  # the flat key of before
    ]:
        with pytest.raises(ConfigError, match=f"key '{key}'"):
            SynthDiagnoseConfig.from_dict({**base, **bad})


def test_synth_diagnose_rejects_natural_problems(nano_model, tmp_path, quiet):
    import pytest

    from midtrain.errors import DataError
    from midtrain.synth.diagnose import SynthDiagnoseConfig, diagnose

    _write_problems(tmp_path / "natural.jsonl", render="natural", modulus=None)
    cfg = SynthDiagnoseConfig(model=str(nano_model), problems=[str(tmp_path / "natural.jsonl")], n_per_range=2, out=str(tmp_path / "diag"))
    with pytest.raises(DataError, match=r"natural\.jsonl:1: .*compact"):
        diagnose(cfg)
    assert not (tmp_path / "diag").exists()


def test_the_diagnose_section_of_training_stages(tmp_path):
    """The training-time knobs are a section owned here: checked with their section's name, the flat keys of before
    refused naming the new key, and off (no probe, nothing read) unless every_steps and data are both set."""
    import pytest

    from midtrain.config import load_config
    from midtrain.data.jsonl import write_jsonl
    from midtrain.errors import ConfigError
    from midtrain.synth.diagnose import DIAGNOSE_RENAMED, DiagnosticsConfig, training_callbacks
    from midtrain.train.pretrain import PretrainConfig
    from midtrain.train.sft import SFTConfig

    base = ["model=m", "corpus.files=[a.jsonl]", "out=o"]
    for cls in (PretrainConfig, SFTConfig):
        assert cls.RENAMED.items() >= DIAGNOSE_RENAMED.items()
        cfg = load_config(cls, None, [*base, "diagnose.every_steps=5", "diagnose.data=p.jsonl"])
        assert cfg.diagnose == DiagnosticsConfig(data="p.jsonl", every_steps=5, n=64)
        with pytest.raises(ConfigError, match="^key 'diagnose.data': every_steps > 0 needs"):
            load_config(cls, None, [*base, "diagnose.every_steps=5"])
        for old, new in DIAGNOSE_RENAMED.items():
            with pytest.raises(ConfigError, match=f"^key '{old}' is now '{new}'$"):
                load_config(cls, None, [*base, f"{old}=1"])
    with pytest.raises(ConfigError, match="key 'diagnose.data'"):  # built in Python: the stage's check names the section
        PretrainConfig(model="m", out="o", tokens="t", diagnose=DiagnosticsConfig(every_steps=5)).validate()
    assert training_callbacks(DiagnosticsConfig(data=str(tmp_path / "missing.jsonl"))) == []  # off: the file is not read
    problems = generate_problems(n=6, ops="2-3", render="compact", modulus=10, order="dependency", seed=1)
    write_jsonl(tmp_path / "p.jsonl", problems)
    (probe,) = training_callbacks(DiagnosticsConfig(data=str(tmp_path / "p.jsonl"), every_steps=7, n=2))
    assert (probe.every_steps, probe.log_name) == (7, "diagnostics.jsonl")
