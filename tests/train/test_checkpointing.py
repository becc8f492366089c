"""When a causal-LM run saves: every N steps or M minutes, whichever first, never at the last step."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from midtrain.train import checkpointing
from midtrain.train.checkpointing import SavePolicy, rank0_decides, save_arguments
from midtrain.train.pretrain import PretrainConfig


class Clock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(checkpointing, "now", c)
    return c


def saves(policy: SavePolicy, max_steps: int, clock: Clock | None = None, minutes_per_step: float = 0.0) -> list[int]:
    """The steps at which ``policy`` asks for a save over a run of ``max_steps`` (the trainer's calls, in order)."""
    policy.on_train_begin(None, None, None)
    out = []
    for step in range(1, max_steps + 1):
        if clock is not None:
            clock.t += minutes_per_step * 60
        state, control = SimpleNamespace(global_step=step, max_steps=max_steps), SimpleNamespace(should_save=False)
        policy.on_step_end(None, state, control)
        if control.should_save:
            out.append(step)
            policy.on_save(None, state, control)
    return out


def test_step_trigger_saves_every_n_steps_but_not_at_the_last(clock):
    assert saves(SavePolicy(every_steps=3, every_minutes=0), 10) == [3, 6, 9]
    assert saves(SavePolicy(every_steps=5, every_minutes=0), 10) == [5]  # step 10 is the end: the final save covers it
    assert saves(SavePolicy(every_steps=0, every_minutes=0), 10) == []


def test_time_trigger_counts_from_the_last_save(clock):
    # 4 minutes a step, a save once 10 minutes have passed: steps 3 (12 min), 6 (12 more), 9
    assert saves(SavePolicy(every_steps=0, every_minutes=10), 10, clock, minutes_per_step=4) == [3, 6, 9]


def test_a_step_save_resets_the_clock(clock):
    # both triggers: the step save at 4 restarts the 10 minutes, so the time trigger fires at 7 (12 min after 4)
    assert saves(SavePolicy(every_steps=4, every_minutes=10), 9, clock, minutes_per_step=4) == [3, 4, 7, 8]


def test_a_resumed_run_counts_from_its_own_start(clock):
    policy = SavePolicy(every_steps=0, every_minutes=10)
    clock.t += 3600  # an hour between construction (the killed run's time) and training
    assert saves(policy, 2, clock, minutes_per_step=1) == []


def test_without_a_process_group_the_flag_is_local():
    assert rank0_decides(True) is True and rank0_decides(False) is False


def _decide(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        # the ranks' clocks disagree (rank 0: due, rank 1: not yet); both must follow rank 0, or a save deadlocks
        got = [rank0_decides(rank == 0), rank0_decides(rank == 1)]
        with open(f"{out}.{rank}", "w") as f:
            f.write(",".join(map(str, got)))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_every_rank_follows_rank_0(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_decide, args=(f"file://{tmp_path / 'store'}", str(tmp_path / "got")), nprocs=2, join=True)
    assert [(tmp_path / f"got.{r}").read_text() for r in (0, 1)] == ["True,False", "True,False"]


def test_defaults_save_periodically_as_hf_trainer_users_expect():
    cfg = PretrainConfig()
    assert (cfg.save_every_steps, cfg.save_every_minutes, cfg.keep_checkpoints) == (500, 30.0, 2)
    assert save_arguments(cfg.keep_checkpoints) == {"save_strategy": "no", "save_total_limit": 2}  # the policy decides
