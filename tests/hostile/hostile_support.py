"""The hostile-input suite's helpers (issue #14): table cases, the in-process and subprocess runners, the checks.

A :class:`Case` is one hostile command: a function that writes bad files under the case's ``tmp_path`` and
returns the argv, the expected exit code, and fragments that the message must hold (the key, the file, the line).
:func:`check_case` runs it through ``midtrain.cli.main`` in this process (fast; ``capsys`` captures the streams)
and applies the suite's universal rules to every case:

- the exit code is the expected one (2 for bad input);
- stderr is exactly one line, it starts with ``error:``, and there is no traceback;
- the message holds every fragment (the key name, the file name, ``file:line`` where a line applies);
- nothing is left behind: a failing command adds no path under the case's directory (no run directory, no
  ``.tmp`` file, no ``.creating-`` staging directory) and touches nothing outside it;
- the malicious pickle's marker file never appears.

Cases whose outcome needs a process boundary (limits, timeouts, environment, concurrency) use :func:`run_sub`.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import midtrain
from midtrain.cli import main

SRC = Path(midtrain.__file__).resolve().parents[1]
Fragment = str | re.Pattern | Callable[["Env"], str]


# -- the shared inputs ------------------------------------------------------------------------------------------
@dataclass
class Assets:
    """Good inputs built once per session (never written by a case) and the known-bad ones derived from them."""

    root: Path
    tok: Path
    nano: Path
    nano2: Path
    short_model: Path  # the nano model with only 64 positions (seq_len above them is cheap to try)
    corpus: Path  # 24 short arithmetic documents (text field)
    pc_data: Path  # prompt/completion records
    problems: Path  # compact synthetic problems (ops 2-3)
    natural: Path  # natural-language synthetic problems
    pairs: Path  # judge pairs (completion, reference)
    bench: Path  # a custom benchmark (id, problem, answer)
    bench_completions: Path
    rl_tasks: Path  # prompt + answer, no graph
    prose: Path  # augment input (id, text)
    aug: Path  # a finished augment run
    split: Path  # a finished augment split run
    probe: Path  # CKA probe texts
    run_dir: Path  # a finished-looking training run (log.jsonl, midtrain.json) for report
    trunc_model: Path  # model.safetensors cut in the middle
    pickle_model: Path  # only a pytorch_model.bin whose pickle would create MARKER
    garbage_config_model: Path  # config.json is not JSON
    no_weights_model: Path  # config + tokenizer, no weights
    marker: Path  # must never exist

    def intact(self) -> None:
        assert not self.marker.exists(), f"the malicious pickle ran: {self.marker} exists"


def chain_text(rng: random.Random) -> str:
    names = "abcdefghijklmnopqrstuvwxyz"
    start, depth, v = rng.randrange(20), rng.randint(2, 4), rng.randint(1, 4)
    facts, steps = [f"{names[start]}={v}"], [f"{names[start]}={v}"]
    for i in range(1, depth):
        c = rng.randint(1, 4)
        nv = (v + c) % 10
        facts.append(f"{names[start + i]}={names[start + i - 1]}+{c}")
        steps.append(f"{names[start + i]}={v}+{c}={nv}")
        v = nv
    return ".".join(facts) + f".?{names[start + depth - 1]}<think>" + ".".join(steps) + f".</think><answer>{v}</answer>"


WORDS = "the a river city model reader quietly north light stone garden theory proof number seven bright old market".split()


def prose(rng: random.Random, paragraphs: int) -> str:
    paras = []
    for _ in range(paragraphs):
        sents = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))).capitalize() + "." for _ in range(rng.randint(2, 4))]
        paras.append(" ".join(sents))
    return "\n\n".join(paras) + "\n"


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


class Pwn:
    """A pickle payload: unpickling it runs ``os.system('touch MARKER')`` (harmless, but proof of code execution)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def malicious_pickle(marker: Path) -> bytes:
    return pickle.dumps({"model.embed_tokens.weight": Pwn(marker)}, protocol=2)


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def build_assets(root: Path, tok: Path, nano: Path) -> Assets:
    """Everything the cases read; built in a few seconds on top of the session's tokenizer and nano model."""
    from midtrain.augment.augment import run as augment
    from midtrain.augment.config import AugmentConfig
    from midtrain.augment.split import SplitConfig, split
    from midtrain.data.jsonl import write_jsonl as write_records
    from midtrain.synth.generate import generate_problems

    rng = random.Random(0)
    corpus = write_jsonl(root / "corpus.jsonl", ({"id": f"c{i}", "text": chain_text(rng)} for i in range(24)))
    pc_data = write_jsonl(
        root / "pc.jsonl",
        ({"prompt": f"a={i % 10}.?a<think>", "completion": f"a={i % 10}.</think><answer>{i % 10}</answer>"} for i in range(16)),
    )
    compact = generate_problems(
        ops="2-3", n=8, render="compact", modulus=10, order="dependency", distractors=False, const_max=9, max_multiplier=3, seed=1
    )
    problems = root / "problems.jsonl"
    write_records(problems, compact)
    natural = root / "natural.jsonl"
    write_records(natural, generate_problems(ops="2-3", n=2, seed=2))
    pairs = write_jsonl(
        root / "pairs.jsonl",
        [
            {"id": "p0", "completion": "<think>hm</think> the cat sat on the mat", "reference": "the cat sat on the mat"},
            {"id": "p1", "completion": "<think>hm</think> a dog ran", "reference": "the cat sat"},
        ],
    )
    bench = write_jsonl(root / "bench.jsonl", ({"id": f"b{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(3)))
    bench_completions = write_jsonl(
        root / "bench_completions.jsonl", ({"id": f"b{i}", "completion": f"\\boxed{{{2 * i}}}"} for i in range(3))
    )
    rl_tasks = write_jsonl(
        root / "rl_tasks.jsonl", ({"id": f"t{i}", "prompt": f"a={i}.b=a+1.?b<think>", "answer": str(i + 1)} for i in range(4))
    )
    prng = random.Random(1)
    prose_path = write_jsonl(root / "prose.jsonl", ({"id": f"doc{i}", "text": prose(prng, 3), "domain": "general"} for i in range(6)))
    aug = root / "aug"
    augment(AugmentConfig.from_dict({"input": [str(prose_path)], "out": str(aug), "tokenizer": str(tok), "max_chunk_tokens": 256}))
    split_dir = root / "split"
    split(SplitConfig(input=str(aug), out=str(split_dir), rl_fraction=0.5))
    probe = write_jsonl(root / "probe.jsonl", ({"text": chain_text(rng)} for _ in range(6)))
    run_dir = root / "runs" / "pretrain-a"
    write_jsonl(run_dir / "log.jsonl", ({"step": s, "loss": 3.0 - 0.1 * s, "lr": 1e-3} for s in range(1, 6)))
    (run_dir / "midtrain.json").write_text(json.dumps({"stage": "pretrain", "status": "complete", "run_key": "k", "metrics": {"steps": 5}}))
    (run_dir / "COMPLETE").write_text("k\n")

    nano2 = copy_model(nano, root / "nano2")
    from midtrain.models.init import ModelInitConfig, init_model

    short = root / "short_model"
    init_model(ModelInitConfig(preset="nano", tokenizer=str(tok), out=str(short), max_position_embeddings=64, seed=0))
    trunc = copy_model(nano, root / "trunc_model")
    st = trunc / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 3])
    marker = root / "PWNED"
    pick = copy_model(nano, root / "pickle_model")
    (pick / "model.safetensors").unlink()
    (pick / "pytorch_model.bin").write_bytes(malicious_pickle(marker))
    garbage = copy_model(nano, root / "garbage_config_model")
    (garbage / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    noweights = copy_model(nano, root / "no_weights_model")
    (noweights / "model.safetensors").unlink()
    return Assets(
        root=root,
        tok=tok,
        nano=nano,
        nano2=nano2,
        short_model=short,
        corpus=corpus,
        pc_data=pc_data,
        problems=problems,
        natural=natural,
        pairs=pairs,
        bench=bench,
        bench_completions=bench_completions,
        rl_tasks=rl_tasks,
        prose=prose_path,
        aug=aug,
        split=split_dir,
        probe=probe,
        run_dir=run_dir,
        trunc_model=trunc,
        pickle_model=pick,
        garbage_config_model=garbage,
        no_weights_model=noweights,
        marker=marker,
    )


# -- one case's world -------------------------------------------------------------------------------------------
@dataclass
class Env:
    """The case's directory (``tmp``), its output path (``out``), and the shared inputs (``a``)."""

    tmp: Path
    a: Assets

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def path(self, name: str) -> Path:
        return self.tmp / name

    def write(self, name: str, content: str | bytes) -> str:
        """Write a file under the case's directory; returns its path as a string."""
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
        return str(p)

    def jsonl(self, name: str, records: Sequence[Any]) -> str:
        return self.write(name, "".join(json.dumps(r) + "\n" for r in records))

    def dir(self, name: str) -> str:
        p = self.tmp / name
        p.mkdir(parents=True, exist_ok=True)
        return str(p)

    def file_parent(self, name: str = "afile") -> Path:
        """A regular file; paths under it cannot be created (NotADirectoryError), even by root."""
        p = self.tmp / name
        p.write_text("I am a file, not a directory\n")
        return p

    def unwritable(self) -> Path:
        """A directory path whose creation fails with a permission error (root ignores chmod: use /sys)."""
        if os.geteuid() != 0:
            ro = self.tmp / "readonly"
            ro.mkdir(exist_ok=True)
            ro.chmod(0o555)
            return ro / "out"
        return Path("/sys/midtrain-hostile") / "out"


@dataclass
class Case:
    """A hostile command: ``argv(env)`` (which may write bad files first), the exit code, the message fragments."""

    id: str
    argv: Callable[[Env], list[str]]
    fragments: Sequence[Fragment] = ()
    code: int = 2
    exists: Sequence[Callable[[Env], Path]] = ()  # paths that must exist afterwards (exit-0 cases)
    marks: Sequence[Any] = ()
    process: bool = False  # run in a child process with a memory limit (native code may abort or allocate wildly)

    def param(self) -> Any:
        return pytest.param(self, id=self.id, marks=list(self.marks))


def params(cases: Sequence[Case]) -> list[Any]:
    ids = [c.id for c in cases]
    dup = {i for i in ids if ids.count(i) > 1}
    assert not dup, f"duplicate case ids: {dup}"
    return [c.param() for c in cases]


# -- running ----------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    code: int
    out: str
    err: str


def run_cli(argv: list[str], capsys: Any) -> Outcome:
    """``midtrain ARGV`` in this process. An exception escaping ``main`` is what a process would print: a traceback."""
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse: usage + message, exit 2
        code = e.code if isinstance(e.code, int) else 1
    except Exception:  # noqa: BLE001 - the traceback a user would see
        buf = io.StringIO()
        traceback.print_exc(file=buf)
        cap = capsys.readouterr()
        return Outcome(1, cap.out, cap.err + buf.getvalue())
    cap = capsys.readouterr()
    return Outcome(int(code or 0), cap.out, cap.err)


def sub_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("MIDTRAIN_QUIET", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


def run_sub(
    argv: list[str],
    *,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    cwd: str | Path | None = None,
) -> Outcome:
    """``python -m midtrain ARGV`` in a child process (killed after ``timeout`` seconds: exit 124)."""
    try:
        res = subprocess.run(
            [sys.executable, "-m", "midtrain", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=sub_env(env),
            preexec_fn=preexec_fn,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return Outcome(124, "", err + f"\n[hostile suite: killed after {timeout:g}s]")
    return Outcome(res.returncode, res.stdout, res.stderr)


def limit_memory(gib: int = 4) -> None:
    """preexec_fn of a child that must not take the shared machine down (address space capped)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (gib << 30, gib << 30))


# -- the universal checks ---------------------------------------------------------------------------------------
LEFTOVER = re.compile(r"(\.tmp$|\.creating-\d+$|\.partial$)")


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (relative), directories included."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def leftovers(root: Path) -> list[str]:
    """Temporary files and staging directories under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if LEFTOVER.search(p.name))


def fragment_text(f: Fragment, env: Env) -> str | re.Pattern:
    return f(env) if callable(f) and not isinstance(f, re.Pattern) else f


def check_message(outcome: Outcome, code: int, fragments: Sequence[str | re.Pattern], where: str = "") -> None:
    """Exit code, one ``error:`` line without a traceback, and every fragment in it."""
    err = outcome.err
    shown = f"{where}exit {outcome.code}; stderr:\n{err[-3000:]}"
    assert "Traceback" not in err, f"a traceback instead of one line: {shown}"
    assert outcome.code == code, f"expected exit {code}: {shown}"
    if code == 0:
        return
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"stderr must be exactly one line, got {len(lines)}: {shown}"
    assert lines[0].startswith("error:"), f"stderr must start with 'error:': {shown}"
    for f in fragments:
        if isinstance(f, re.Pattern):
            assert f.search(lines[0]), f"the message does not match {f.pattern!r}: {shown}"
        else:
            assert f in lines[0], f"the message does not name {f!r}: {shown}"


def check_case(case: Case, env: Env, capsys: Any) -> Outcome:
    """Run one table case in-process and apply every universal rule (see the module docstring)."""
    argv = case.argv(env)
    before = tree(env.tmp)
    outcome = run_sub(argv, timeout=60, preexec_fn=limit_memory) if case.process else run_cli(argv, capsys)
    env.a.intact()
    frags = [fragment_text(f, env) for f in case.fragments]
    check_message(outcome, case.code, frags, where=f"midtrain {' '.join(argv)}\n")
    if case.code != 0:
        new = sorted(tree(env.tmp) - before)
        assert not new, f"a failed command left paths behind: {new[:10]}"
        assert not Path("/sys/midtrain-hostile").exists()
    else:
        assert not leftovers(env.tmp), f"temporary files left behind: {leftovers(env.tmp)}"
        for p in case.exists:
            assert p(env).exists(), f"{p(env)} was not written"
    return outcome


# -- small builders of bad inputs --------------------------------------------------------------------------------
def dup_key_yaml(key: str, first: Any, second: Any, extra: str = "") -> str:
    return f"{extra}{key}: {json.dumps(first)}\n{key}: {json.dumps(second)}\n"


def alias_bomb(key: str, levels: int = 9, width: int = 9) -> str:
    """A billion-laughs YAML document under ``key``: tiny on disk, ``width ** levels`` leaves when expanded."""
    names = [f"l{i}" for i in range(levels)]
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['lol'] * width)}]"]
    for prev, name in zip(names, names[1:]):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * width)}]")
    body = "\n".join("  " + line for line in lines)
    return f"{key}:\n{body}\n"


BAD_UTF8 = b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "caf\xe9 \xff\xfe"}\n'


def bad_utf8(good: dict[str, Any] | str) -> bytes:
    """A good first line, then a second line that is not UTF-8 (Latin-1 bytes inside a JSON string)."""
    first = good if isinstance(good, str) else json.dumps(good)
    return first.rstrip("\n").encode() + b'\n{"id": "caf\xe9 \xff\xfe", "text": "x"}\n'


def truncated_jsonl(records: Sequence[dict[str, Any]]) -> str:
    """Complete lines, then the last record cut in the middle (as if a writer died)."""
    lines = [json.dumps(r) for r in records]
    return "\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2]
