"""``midtrain augment split``: accepted augmented chunks into an SFT part and an RL part.

Algorithm (DESIGN §1.1 steps 2–3): accepted augmented records go to the RL part when
``sha256(salt + chunk text)`` mapped to [0, 1) is below ``rl_fraction``, else to the SFT part. Hashing the text
(not the id) keeps identical chunks on the same side, so no RL reference is ever seen verbatim in SFT. Writes
``sft.jsonl`` (records plus ``text`` = the rendered augmented text, ready for SFT with loss on all tokens) and
``rl.jsonl``.

Launch: ``midtrain augment split runs/augment --out runs/split --rl-fraction 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midtrain.config import Config, param
from midtrain.console import log
from midtrain.data.jsonl import write_jsonl
from midtrain.errors import ConfigError, DataError
from midtrain.runs import META, Result, is_complete, open_run
from midtrain.shards import read_records, unit_interval
from midtrain.thoughts import render_augmented


def accepted_records(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if p.is_dir() and (p / META).is_file() and not is_complete(p):
        raise DataError(f"{p}: the augment run is not finished (no COMPLETE marker); run or resume it first")
    if p.is_dir() and (p / "rl.jsonl").is_file() and not (p / "shards").is_dir():
        p = p / "rl.jsonl"  # a split directory: its RL part
    out = []
    seen: set[str] = set()
    for rec in read_records(p):
        if rec.get("status", "accepted") != "accepted":
            continue
        if not isinstance(rec.get("segments"), list) or "chunk" not in rec or "id" not in rec:
            raise DataError(f"{p}: record {rec.get('id', '?')} is not an augmented chunk (needs id, chunk, segments)")
        if rec["id"] in seen:  # a duplicated chunk would land twice in SFT, or once on each side of the split
            raise DataError(f"{p}: duplicate id '{rec['id']}'")
        seen.add(rec["id"])
        out.append(rec)
    if not out:
        raise DataError(f"{p}: no accepted augmented records")
    return out


@dataclass
class SplitConfig(Config):
    input: str = param("", "An augment output directory (or a JSONL/Parquet file of augmented records).", positional=True)
    out: str = param("", "Output directory: sft.jsonl, rl.jsonl, midtrain.json.", path="dir")
    rl_fraction: float = param(0.5, "Share of accepted chunks for RL mid-training (the paper: half).", ge=0, le=1)
    salt: str = param("midtrain-split", "Hash salt: change it for a different deterministic split.")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if not self.input or not self.out:
            raise ConfigError("keys 'input' and 'out': both are required")


def is_rl(chunk: str, rl_fraction: float, salt: str = "midtrain-split") -> bool:
    """The deterministic split rule: RL iff the salted chunk-text hash falls below ``rl_fraction``."""
    return unit_interval(chunk, salt) < rl_fraction


def split(cfg: SplitConfig) -> Result:
    """Split accepted augmented chunks into SFT and RL parts (see the module docstring)."""
    records = accepted_records(cfg.input)
    with open_run(cfg.out, "augment_split", cfg, {"input": cfg.input}, overwrite=cfg.overwrite) as run:
        if run.cached:
            return Result.of(run)
        rl = [r for r in records if is_rl(r["chunk"], cfg.rl_fraction, cfg.salt)]
        sft = [{**r, "text": render_augmented(r)} for r in records if not is_rl(r["chunk"], cfg.rl_fraction, cfg.salt)]
        write_jsonl(run.path / "sft.jsonl", sft)
        write_jsonl(run.path / "rl.jsonl", rl)
        metrics = {
            "accepted": len(records),
            "sft": len(sft),
            "rl": len(rl),
            "sft_tokens": sum(int(r.get("tokens") or 0) for r in sft),
            "rl_tokens": sum(int(r.get("tokens") or 0) for r in rl),
        }
        run.finish(metrics)
        log(f"augment split: {len(sft)} SFT + {len(rl)} RL chunks → {run.path}")
        return Result.of(run)


__all__ = ["SplitConfig", "accepted_records", "is_rl", "split"]
