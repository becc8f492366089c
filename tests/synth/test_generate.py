"""``synth generate``'s ``exclude``: a held-out set holds none of the excluded files' problems, redraws them
deterministically, says when exclusion leaves too few problems, and names a bad exclude file."""

from __future__ import annotations

import pytest

from midtrain.cli import main
from midtrain.data.jsonl import iter_jsonl, write_jsonl
from midtrain.errors import DataError, MidtrainError
from midtrain.synth.generate import SynthConfig, generate_problems

# The compact world of the demo (configs/demo-base.yaml), reverse problems: the domain B of prism-mix-c5.yaml.
WORLD = dict(render="compact", modulus=10, order="dependency", distractors=False, const_max=9, max_multiplier=9, mode="reverse")
# A world with 26 distinct problems: op 2 is a constant and one product (a=1.b=3*a.?b); only the letter the names
# start from (26 of them) varies.
TINY = dict(ops="2", render="compact", modulus=10, order="dependency", distractors=False, const_max=1, max_multiplier=3, kinds=["mul"])


def test_excluded_problems_are_redrawn(tmp_path):
    train = generate_problems(SynthConfig(ops="4", n=300, seed=1, **WORLD))
    path = tmp_path / "train.jsonl"
    write_jsonl(path, train)
    plain = generate_problems(SynthConfig(ops="4", n=300, seed=2, **WORLD))
    train_ids = {r["id"] for r in train}
    assert train_ids & {r["id"] for r in plain}, "op-4 reverse problems repeat across seeds: the test needs an overlap"

    held = generate_problems(SynthConfig(ops="4", n=300, seed=2, exclude=[str(path)], **WORLD))
    assert len(held) == 300 and len({r["id"] for r in held}) == 300
    assert not train_ids & {r["id"] for r in held}
    # Problems before the first excluded draw are the same as without exclusion, and the result is deterministic.
    first = next(i for i, r in enumerate(plain) if r["id"] in train_ids)
    assert held[:first] == plain[:first] and held[first] != plain[first]
    assert generate_problems(SynthConfig(ops="4", n=300, seed=2, exclude=[str(path)], **WORLD)) == held


def test_exclusion_can_exhaust_a_small_world(tmp_path):
    every = generate_problems(SynthConfig(n=26, seed=0, **TINY))
    assert len({r["id"] for r in every}) == 26
    path = tmp_path / "seen.jsonl"
    write_jsonl(path, every[:20])
    rest = generate_problems(SynthConfig(n=6, seed=3, exclude=[str(path)], **TINY))
    assert {r["id"] for r in rest} == {r["id"] for r in every[20:]}
    with pytest.raises(MidtrainError, match=r"problem 7 of 7 .*excluded x"):
        generate_problems(SynthConfig(n=7, seed=3, exclude=[str(path)], **TINY))


def test_an_exclude_record_without_id_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, [{"id": "syn-1"}, {"prompt": "x"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:2.*'id'"):
        generate_problems(SynthConfig(n=2, seed=0, exclude=[str(path)], **TINY))


def test_cli_exclude(tmp_path, capsys):
    seen = tmp_path / "seen.jsonl"
    write_jsonl(seen, generate_problems(SynthConfig(n=20, seed=0, **TINY)))
    out = tmp_path / "held.jsonl"
    argv = ["synth", "generate", "--ops", "2", "--render", "compact", "--modulus", "10", "--order", "dependency"]
    argv += ["--no-distractors", "--const-max", "1", "--max-multiplier", "3", "--kinds", "mul", "--n", "6", "--seed", "3"]
    assert main([*argv, "--exclude", str(seen), "--out", str(out)]) == 0, capsys.readouterr().err
    held = {r["id"] for r in iter_jsonl(out)}
    assert len(held) == 6 and not held & {r["id"] for r in iter_jsonl(seen)}
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["synth", "generate", "--help"])
    assert "--exclude" in capsys.readouterr().out
