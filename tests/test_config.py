from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pytest

from midtrain.config import Config, load_config, param
from midtrain.errors import ConfigError


@dataclass
class Inner(Config):
    lr: float = param(3e-4, "Learning rate.")
    schedule: Literal["cosine", "linear"] = param("cosine", "Decay.")


@dataclass
class Outer(Config):
    name: str = param("x", "A name.")
    steps: int = param(10, "Steps.")
    files: list[str] = param([], "Files.")
    flag: bool = param(False, "A flag.")
    maybe: int | None = param(None, "Optional int.")
    train: Inner = param(Inner(), "Training.")


def test_defaults_and_mutable_defaults_are_independent():
    a, b = Outer(), Outer()
    a.files.append("f")
    assert b.files == [] and a.train is not b.train


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("steps: 5\ntrain:\n  lr: 0.01\n")
    cfg = load_config(Outer, p, ["train.lr=1e-3", "files=a,b", "flag=true", "maybe=3"])
    assert cfg.steps == 5 and cfg.train.lr == 1e-3 and cfg.files == ["a", "b"] and cfg.flag and cfg.maybe == 3
    assert isinstance(cfg.train.lr, float)


def test_int_promotes_to_float_but_not_bool_to_int():
    assert load_config(Outer, None, {"train.lr": 1}).train.lr == 1.0
    with pytest.raises(ConfigError, match="'steps'.*expected int"):
        load_config(Outer, None, {"steps": True})


def test_unknown_key_names_closest(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'train.lrr' in .*c.yaml \(did you mean 'train.lr'\?\)"):
        load_config(Outer, p)
    with pytest.raises(ConfigError, match=r"unknown key 'stepz' \(did you mean 'steps'\?\)"):
        load_config(Outer, None, ["stepz=3"])


def test_wrong_type_names_key_and_type(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("steps: many\n")
    with pytest.raises(ConfigError, match="key 'steps' in .*: expected int, got 'many'"):
        load_config(Outer, p)
    with pytest.raises(ConfigError, match="key 'train.schedule'.*one of 'cosine', 'linear'"):
        load_config(Outer, None, ["train.schedule=step"])


def test_bad_yaml_names_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("steps: 1\ntrain: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c.yaml, line \d+: invalid YAML"):
        load_config(Outer, p)


def test_round_trip_dict():
    cfg = load_config(Outer, None, {"train.lr": 0.5, "files": ["x"]})
    assert Outer.from_dict(cfg.to_dict()) == cfg


def test_field_docs_flatten():
    docs = Outer.field_docs()
    assert docs["train.lr"][1] == "Learning rate." and docs["train.lr"][2] == 3e-4


@dataclass
class Moved(Config):
    RENAMED: ClassVar[dict[str, str]] = {"lr": "train.lr", "decay": "train.schedule"}

    train: Inner = param(Inner(lr=1e-6), "Training, with this class's own defaults.")
    old: Outer = param(Outer(), "A nested section.")


def test_renamed_key_names_its_new_place_in_every_form(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"^key 'lr' in .*m\.yaml is now 'train\.lr'$"):
        load_config(Moved, p)
    with pytest.raises(ConfigError, match=r"^key 'decay' is now 'train\.schedule'$"):
        load_config(Moved, None, ["decay=linear"])
    with pytest.raises(ConfigError, match=r"^key 'lr' is now 'train\.lr'$"):
        load_config(Moved, None, {"lr": 0.1})
    with pytest.raises(ConfigError, match=r"^key 'x\.lr' in s\.yaml is now 'x\.train\.lr'$"):  # inside a section
        Moved.from_dict({"lr": 1}, prefix="x.", source="s.yaml")
    with pytest.raises(ConfigError, match="unknown key 'lrr'"):  # other unknown keys stay unknown
        load_config(Moved, None, ["lrr=1"])
    assert load_config(Moved, None, ["train.lr=0.5"]).train.lr == 0.5


def test_field_docs_list_renamed_keys_and_section_defaults_of_the_owner():
    docs = Moved.field_docs()
    assert docs["lr"][1] == "Renamed: use train.lr." and docs["lr"][0] is float
    assert docs["train.lr"][2] == 1e-6  # Moved's default section, not Inner's class default 3e-4
    assert docs["old.train.lr"][2] == 3e-4


@dataclass
class Owned(Config):
    train: Inner = param(Inner(lr=1e-6, schedule="linear"), "A section whose defaults are not its class's.")
    old: Outer = param(Outer(name="own", train=Inner(lr=5e-5)), "A section with a section inside.")


def test_a_partial_section_keeps_the_fields_own_defaults_in_yaml_as_on_the_command_line(tmp_path):
    """`train: {lr: 0.1}` in a file changes lr only: schedule stays the owner's "linear", not Inner's "cosine"."""
    p = tmp_path / "o.yaml"
    p.write_text("train: {lr: 0.1}\nold: {steps: 3, train: {schedule: cosine}}\n")
    from_file = load_config(Owned, p)
    assert from_file.train == Inner(lr=0.1, schedule="linear")
    assert from_file.old.name == "own" and from_file.old.steps == 3  # the owner's default section, one key changed
    assert from_file.old.train == Inner(lr=5e-5, schedule="cosine")  # ... and so on, section by section
    flags = load_config(Owned, None, ["train.lr=0.1", "old.steps=3", "old.train.schedule=cosine"])
    assert flags == from_file  # the same config however it is written
    assert Owned.from_dict({"train": {"lr": 0.1}}).train.schedule == "linear"


def test_rl_optim_in_a_file_keeps_rl_defaults():
    """The bug this fixes: an RL stage with `optim: {lr: 1e-4}` ran with pretraining's AdamW (weight decay 0.1,
    beta2 0.95, cosine with 20 warm-up steps), not the RL defaults that `midtrain rl --help` lists."""
    from midtrain.train.rl_config import RL_OPTIM, RLConfig

    optim = RLConfig.from_dict({"optim": {"lr": 1e-4}}, check=False).optim
    assert optim == RL_OPTIM.replace(lr=1e-4)
    assert (optim.weight_decay, optim.beta2, optim.schedule, optim.warmup_steps) == (0.0, 0.999, "constant", 0)
    assert RLConfig.field_docs()["optim.weight_decay"][2] == optim.weight_decay


@dataclass
class Counts(Config):
    steps: int = param(1, "Steps.")
    sizes: list[int] = param([], "Sizes.")
    big: int = param(0, "A count beyond int32, declared.", le=2**53)
    extra: dict[str, Any] = param({}, "Free-form values (checked where they land).")


def test_int_fields_are_bounded_to_int32_unless_they_declare_a_bound():
    from midtrain.config import MAX_INT

    assert Counts.from_dict({"steps": MAX_INT, "sizes": [-MAX_INT - 1], "big": 2**40, "extra": {"n": 2**63}}).big == 2**40
    for data, key in [({"steps": 2**63}, "steps"), ({"sizes": [1, MAX_INT + 1]}, r"sizes\[1\]"), ({"big": 2**53 + 1}, "big")]:
        with pytest.raises(ConfigError, match=f"key '{key}'"):
            Counts.from_dict(data)
    with pytest.raises(ConfigError, match=rf"key 'steps': must be >= {-MAX_INT - 1}"):
        Counts.from_dict({"steps": -(2**63)})
