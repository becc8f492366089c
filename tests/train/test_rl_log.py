"""midtrain.train.rl_log: the counters a checkpoint carries, the order that marks it complete, the record's means."""

from __future__ import annotations

import json
from types import SimpleNamespace

from midtrain.train.rl_log import COUNTERS, Counters, RLLogCallback, reward_means


def test_counters_round_trip_and_tolerate_missing_fields():
    c = Counters()
    c.gen_s, c.tokens_generated, c.reward_errors = 1.5, 120.0, 2.0
    again = Counters()
    again.load(json.loads(json.dumps(c.to_dict())))
    assert again.to_dict() == c.to_dict()
    again.load({"gen_s": 3})  # a checkpoint of an older midtrain: the rest start at 0
    assert again.gen_s == 3.0 and again.tokens_generated == 0.0


def test_extra_state_is_written_before_the_counters_mark_the_checkpoint_complete(tmp_path):
    cb = RLLogCallback(SimpleNamespace(path=tmp_path), Counters(), max_steps=4)
    order: list[str] = []
    cb.checkpoint_hooks.append(lambda ckpt: order.append("ema" if not (ckpt / COUNTERS).exists() else "late"))
    cb.mark_checkpoint(tmp_path, SimpleNamespace(global_step=2))
    assert order == ["ema"] and json.loads((tmp_path / COUNTERS).read_text())["step"] == 2


def test_reward_means_are_per_sample():
    assert reward_means({"info_gain": 3.0, "logp_think": -6.0, "n": 3.0}) == {"info_gain": 1.0, "logp_think": -2.0}
    assert reward_means({"info_gain": 0.0, "n": 0.0}) == {}  # nothing counted in the window: no keys
