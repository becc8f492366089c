"""Hostile token stores (issue 32, item 4): a `midtrain tokenize` store is checked against the model before training.

Token ids outside the model's vocabulary crashed ``pretrain`` and ``sft`` with an ``IndexError``, and a manifest
without ``domains`` with a ``KeyError``. Now an id at or above the model's vocabulary is one line naming the store's
file (the ``.bin`` when the data says so, ``manifest.json`` when its recorded ``max_id`` does), and a manifest key
that is missing or of the wrong kind is one line naming the manifest and the key. Nothing is left behind.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hostile_support import Case, Env, check_case, params

pytestmark = pytest.mark.timeout(120)

MANIFEST = "manifest.json"


@pytest.fixture(scope="module")
def store(tmp_path_factory, assets) -> Path:
    """A good store of the hostile corpus, tokenized with the nano model's tokenizer."""
    from midtrain.train.tokenize import TokenizeConfig, run

    out = tmp_path_factory.mktemp("store") / "tokens"
    run(TokenizeConfig.from_dict({"model": str(assets.nano), "corpus": {"files": [str(assets.corpus)]}, "out": str(out)}))
    return out


@pytest.fixture
def env_store(env: Env, store: Path) -> Env:
    shutil.copytree(store, env.tmp / "tokens")
    return env


def edit_manifest(e: Env, change: Callable[[dict[str, Any]], None]) -> Path:
    path = e.tmp / "tokens" / MANIFEST
    man = json.loads(path.read_text())
    change(man)
    path.write_text(json.dumps(man))
    return path


def poke_id(e: Env, token_id: int) -> None:
    """Overwrite one token of the first shard with ``token_id`` (as if the .bin came from elsewhere)."""
    man = json.loads((e.tmp / "tokens" / MANIFEST).read_text())
    tokens = np.memmap(e.tmp / "tokens" / man["domains"][0]["shards"][0]["bin"], dtype=np.dtype(man["dtype"]).newbyteorder("<"), mode="r+")
    tokens[3] = token_id
    tokens.flush()


def TRAIN(e: Env, verb: str = "pretrain") -> list[str]:
    return [verb, "--model", str(e.a.nano), "--tokens", str(e.tmp / "tokens"), "--max-steps", "1", "--seq-len", "32", "--out", str(e.out)]


def with_id(verb: str, token_id: int) -> Callable[[Env], list[str]]:
    def argv(e: Env) -> list[str]:
        poke_id(e, token_id)
        return TRAIN(e, verb)

    return argv


def with_manifest(change: Callable[[dict[str, Any]], None]) -> Callable[[Env], list[str]]:
    def argv(e: Env) -> list[str]:
        edit_manifest(e, change)
        return TRAIN(e)

    return argv


def shard(man: dict[str, Any]) -> dict[str, Any]:
    return man["domains"][0]["shards"][0]


BIN = lambda e: json.loads((e.tmp / "tokens" / MANIFEST).read_text())["domains"][0]["shards"][0]["bin"]  # noqa: E731

CASES = [
    Case("store/id-above-vocab-pretrain", with_id("pretrain", 60000), [BIN, "token id 60000", "vocabulary"]),
    Case("store/id-above-vocab-sft", with_id("sft", 60000), [BIN, "token id 60000"]),
    Case("store/recorded-max-id-above-vocab", with_manifest(lambda m: shard(m).update(max_id=59999)), [MANIFEST, "59999"]),
    Case("store/manifest-without-domains", with_manifest(lambda m: m.pop("domains")), [MANIFEST, "missing key 'domains'"]),
    Case("store/manifest-without-tokenizer", with_manifest(lambda m: m.pop("tokenizer")), [MANIFEST, "missing key 'tokenizer'"]),
    Case("store/domains-not-a-list", with_manifest(lambda m: m.update(domains={"a": 1})), [MANIFEST, "key 'domains'"]),
    Case(
        "store/domain-without-shards",
        with_manifest(lambda m: m["domains"][0].pop("shards")),
        [MANIFEST, "missing key 'domains[0].shards'"],
    ),
    Case(
        "store/shard-without-bin",
        with_manifest(lambda m: shard(m).pop("bin")),
        [MANIFEST, "missing key 'domains[0].shards[0].bin'"],
    ),
    Case(
        "store/shard-bin-outside-the-store",
        with_manifest(lambda m: shard(m).update(bin="../../x.bin")),
        [MANIFEST, "domains[0].shards[0].bin"],
    ),
    Case(
        "store/shard-tokens-not-a-count",
        with_manifest(lambda m: shard(m).update(tokens="many")),
        [MANIFEST, "domains[0].shards[0].tokens"],
    ),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile(case: Case, env_store: Env, capsys) -> None:
    check_case(case, env_store, capsys)


def test_a_good_store_still_trains_and_records_its_largest_id(env_store: Env, capsys) -> None:
    man = json.loads((env_store.tmp / "tokens" / MANIFEST).read_text())
    assert 0 < shard(man)["max_id"] < 300  # the nano model's vocabulary is the hostile tokenizer's
    check_case(Case("store/good", TRAIN, code=0, exists=[lambda e: e.out / "COMPLETE"]), env_store, capsys)
