"""``midtrain eval`` end to end on a tiny local model, resume after an interrupt or a kill, and ``eval score``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from midtrain.cli import main
from midtrain.errors import ConfigError
from midtrain.eval.evaluate import EvalConfig, run
from midtrain.eval.score import ScoreConfig, score
from midtrain.eval.summary import macro_averages, summarize_benchmark
from midtrain.fileio import read_json
from midtrain.models import generation
from shared_support import needs_benchmarks


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- metrics on hand-made rows ----------------------------------------------------------------------------------
def test_summarize_benchmark_hand_rows() -> None:
    rows = []
    # problem a: 3 of 4 correct; answers 5,5,5,7 → majority 5 (correct)
    for j, (ok, v) in enumerate([(1, "5"), (1, "5"), (0, "7"), (1, "5")]):
        rows.append({"id": "a", "sample": j, "correct": bool(ok), "vote": v, "answer": v, "tokens": 10, "thinking_tokens": 4})
    # problem b: 1 of 4 correct; answers 2,3,3,None → majority 3 (wrong); one no-answer
    for j, (ok, v) in enumerate([(1, "2"), (0, "3"), (0, "3"), (0, None)]):
        rows.append(
            {"id": "b", "sample": j, "correct": bool(ok), "vote": v, "answer": v, "tokens": 20, "thinking_tokens": None, "finished": j != 3}
        )
    s = summarize_benchmark(rows)
    assert s["n"] == 2 and s["samples"] == 8 and s["k"] == 4
    assert s["accuracy"] == 0.5 and s["mean_at_k"] == 0.5
    assert s["pass_at_k"]["1"] == 0.5
    assert s["pass_at_k"]["2"] == pytest.approx((1.0 + 0.5) / 2)  # a: 1 - C(1,2)/C(4,2) = 1; b: 1 - C(3,2)/C(4,2) = .5
    assert s["pass_at_k"]["4"] == 1.0
    assert s["maj_at_k"] == 0.5 and s["no_answer"] == 1 and s["no_answer_rate"] == 0.125
    assert s["response_tokens_mean"] == 15.0 and s["thinking_tokens_mean"] == 4.0 and s["truncated_rate"] == 0.125


def test_macro_and_domain_weighted_averages() -> None:
    per = {"gsm8k": {"mean_at_k": 0.8}, "math500": {"mean_at_k": 0.4}, "gpqa_diamond": {"mean_at_k": 0.3}}
    dom = {"gsm8k": "math", "math500": "math", "gpqa_diamond": "science"}
    m = macro_averages(per, dom)
    assert m["macro_avg"] == pytest.approx(0.5)
    assert m["domain_weighted_avg"] == pytest.approx((0.6 + 0.3) / 2)  # math 0.6, science 0.3, equal weights
    m = macro_averages(per, dom, {"math": 3.0, "science": 1.0})
    assert m["domain_weighted_avg"] == pytest.approx((3 * 0.6 + 0.3) / 4)


# -- end to end -------------------------------------------------------------------------------------------------
def _cfg(model: Path, out: Path, **kw) -> EvalConfig:
    base = dict(model=str(model), out=str(out), benchmarks=["gsm8k"], limit=4, max_new_tokens=8, batch_size=2, progress=False)
    base.update(kw)
    return EvalConfig.from_dict(base)


@needs_benchmarks
def test_eval_gsm8k_slice_end_to_end(eval_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "e"
    res = run(_cfg(eval_model, out))
    rows = rows_of(out / "samples.jsonl")
    assert len(rows) == 4 and {r["id"] for r in rows} == {f"gsm8k-test-{i}" for i in range(4)}
    for r in rows:
        assert set(r) >= {"benchmark", "id", "sample", "completion", "answer", "correct", "tokens", "thinking_tokens", "finished"}
        assert 1 <= r["tokens"] <= 8
        assert r["thinking_tokens"] is not None  # think format: the prompt opened <think>
    s = read_json(out / "summary.json")
    g = s["benchmarks"]["gsm8k"]
    assert s["prompt_format"] == "think" and g["n"] == 4 and g["samples"] == 4 and set(g["pass_at_k"]) == {"1"}
    assert g["mean_at_k"] == sum(r["correct"] for r in rows) / 4
    assert g["no_answer"] == sum(r["answer"] is None for r in rows)
    assert s["macro_avg"] == g["mean_at_k"] and res.metrics["gsm8k.mean_at_k"] == g["mean_at_k"]
    assert (out / "COMPLETE").is_file()
    again = run(_cfg(eval_model, out))  # same config: a cache hit, nothing regenerated
    assert again.cached and len(rows_of(out / "samples.jsonl")) == 4


class Counting:
    """Wraps midtrain.models.generation.generate: counts prompts, optionally raises on the N-th call."""

    def __init__(self, monkeypatch, fail_on_call: int | None = None):
        self.real = generation.generate
        self.prompts = 0
        self.calls = 0
        self.fail_on_call = fail_on_call
        monkeypatch.setattr(generation, "generate", self)

    def __call__(self, model, tokenizer, prompts, **kw):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        self.prompts += len(prompts)
        return self.real(model, tokenizer, prompts, **kw)


@needs_benchmarks
@pytest.mark.parametrize("workers", [0, 1])
def test_resume_after_interrupt_generates_only_missing_samples(eval_model: Path, tmp_path: Path, monkeypatch, workers: int) -> None:
    out = tmp_path / "e"
    cfg = _cfg(eval_model, out, limit=6, score_workers=workers)
    counting = Counting(monkeypatch, fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    first = rows_of(out / "samples.jsonl")
    assert len(first) == 4 and counting.prompts == 4  # two batches of 2 finished before the interrupt
    assert read_json(out / "midtrain.json")["status"] == "failed" and not (out / "COMPLETE").exists()
    with open(out / "samples.jsonl", "ab") as f:  # a kill mid-write leaves a torn last line
        f.write(b'{"benchmark": "gsm8k", "id": "gsm8k-te')
    counting = Counting(monkeypatch)
    run(cfg)
    assert counting.prompts == 2  # only the two missing samples were generated
    rows = rows_of(out / "samples.jsonl")
    assert len(rows) == 6 and len({(r["id"], r["sample"]) for r in rows}) == 6
    assert rows[:4] == first
    assert read_json(out / "summary.json")["benchmarks"]["gsm8k"]["n"] == 6


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@needs_benchmarks
@pytest.mark.slow
def test_kill_9_midway_then_rerun_finishes(eval_model: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "killed"
    args = [
        "eval",
        str(eval_model),
        "--benchmarks",
        "gsm8k",
        "--limit",
        "12",
        "--max-new-tokens",
        "48",
        "--batch-size",
        "2",
        "--score-workers",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "MIDTRAIN_QUIET": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "midtrain", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples = out / "samples.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if samples.is_file() and len(rows_of(samples)) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    children = children_of(proc.pid)  # the scoring worker (and multiprocessing's resource tracker)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
        time.sleep(0.2)
    assert children and not any(Path(f"/proc/{c}").exists() for c in children), "a worker outlived its killed parent"
    done = len({(r["id"], r["sample"]) for r in rows_of(samples)})
    assert 2 <= done < 12 and not (out / "COMPLETE").exists()
    counting = Counting(monkeypatch)
    assert main(args) == 0
    assert counting.prompts == 12 - done
    rows = rows_of(samples)
    assert len(rows) == 12 and len({(r["id"], r["sample"]) for r in rows}) == 12


def test_sampling_several_per_problem_with_custom_data(eval_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "mine.jsonl"
    data.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"id": "m1", "problem": "What is 1+1?", "answer": "2"},
                {"id": "m2", "problem": "What is 2+2?", "answer": "4"},
            ]
        )
    )
    mc = tmp_path / "quiz.jsonl"
    mc.write_text(json.dumps({"id": "q1", "problem": "Pick.", "answer": "B", "choices": ["a", "b", "c", "d"]}) + "\n")
    out = tmp_path / "e"
    run(
        EvalConfig.from_dict(
            dict(
                model=str(eval_model),
                out=str(out),
                data=[str(data), str(mc)],
                n_samples=4,
                temperature=1.0,
                max_new_tokens=6,
                prompt_format="fewshot",
                n_shots=2,
                progress=False,
            )
        )
    )
    s = read_json(out / "summary.json")
    assert s["prompt_format"] == "fewshot"
    mine, quiz = s["benchmarks"]["mine"], s["benchmarks"]["quiz"]
    assert mine["n"] == 2 and mine["samples"] == 8 and set(mine["pass_at_k"]) == {"1", "2", "4"}
    assert quiz["kind"] == "choice" and quiz["domain"] == "custom" and quiz["samples"] == 4
    assert all(r["thinking_tokens"] is None for r in rows_of(out / "samples.jsonl"))  # fewshot: no thinking


def test_bad_input_fails_before_the_run_dir_exists(eval_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "e"
    root = tmp_path / "bench"  # a data root of its own: the chat-template check, not the shared data, is under test
    (root / "gsm8k").mkdir(parents=True)
    (root / "gsm8k" / "test.jsonl").write_text(json.dumps({"id": "1", "problem": "1 + 1?", "answer": "2"}) + "\n")
    argv = ["eval", str(eval_model), "--benchmarks", "gsm8k", "--data-root", str(root), "--prompt-format", "chat", "--out", str(out)]
    assert main(argv) == 2
    assert "needs a chat template" in capsys.readouterr().err and not out.exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "problem": "p", "answer": "1"}\n{"id": 2,\n')
    assert main(["eval", str(eval_model), "--data", str(bad), "--out", str(out)]) == 2
    assert f"{bad}:2: malformed JSON" in capsys.readouterr().err and not out.exists()
    with pytest.raises(ConfigError, match="temperature > 0"):
        EvalConfig.from_dict(dict(model="m", out="o", benchmarks=["gsm8k"], n_samples=4))
    with pytest.raises(ConfigError, match="at least one of benchmarks"):
        EvalConfig.from_dict(dict(model="m", out="o"))


def test_vllm_backend_needs_vllm() -> None:
    import importlib.util

    from midtrain.eval.evaluate import pick_backend

    assert pick_backend("transformers") == "transformers"
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ConfigError, match="vllm is not installed"):
            pick_backend("vllm")
        assert pick_backend("auto") == "transformers"


# -- eval score -------------------------------------------------------------------------------------------------
@needs_benchmarks
def test_score_cli_on_a_benchmark(tmp_path: Path, capsys) -> None:
    from midtrain.eval.benchmarks import load_benchmark

    _, recs, _ = load_benchmark("gsm8k", limit=10)
    comps = tmp_path / "c.jsonl"
    lines = []
    for i, r in enumerate(recs):
        lines.append({"id": r["id"], "completion": f"so the answer is \\boxed{{{r['answer']}}}"})
        lines.append({"id": r["id"], "completion": "I am not sure." if i % 2 else f"#### {int(r['answer']) + 1}"})
    comps.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["eval", "score", "--benchmark", "gsm8k", "--completions", str(comps), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n"] == 10 and s["samples"] == 20 and s["k"] == 2
    assert s["accuracy"] == 0.5 and s["mean_at_k"] == 0.5
    assert s["pass_at_k"] == {"1": 0.5, "2": 1.0}
    assert s["no_answer"] == 5 and s["missing"] == 1319 - 10


def test_score_custom_data_and_errors(tmp_path: Path, capsys) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"id": "x", "problem": "half of one?", "answer": "\\frac{1}{2}"},
                {"id": "y", "problem": "1,000 + 234?", "answer": "1234"},
            ]
        )
    )
    comps = tmp_path / "c.jsonl"
    comps.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"id": "x", "completion": "<think>maybe 1/3</think> It is 0.5."},
                {"id": "y", "completion": "The total is $1,234."},
                {"id": "y", "completion": "<think>never closed"},
            ]
        )
    )
    res = score(ScoreConfig.from_dict(dict(data=str(data), completions=str(comps), out=str(tmp_path / "s"))))
    s = res.to_dict()
    assert s["n"] == 2 and s["samples"] == 3 and s["no_answer"] == 1 and s["accuracy"] == pytest.approx(2 / 3)
    assert s["mean_at_k"] == pytest.approx((1 + 0.5) / 2) and s["pass_at_k"] == {"1": pytest.approx(0.75)}
    assert read_json(tmp_path / "s" / "summary.json") == s and len(rows_of(tmp_path / "s" / "samples.jsonl")) == 3
    comps.write_text('{"id": "x", "completion": "1"}\n{"id": "zz", "completion": "2"}\n')
    assert main(["eval", "score", "--data", str(data), "--completions", str(comps)]) == 2
    assert f"{comps}:2: id 'zz' is not in the benchmark" in capsys.readouterr().err
    comps.write_text('{"id": "x", "text": "1"}\n')
    assert main(["eval", "score", "--data", str(data), "--completions", str(comps)]) == 2
    assert f"{comps}:1: a completion line needs 'id' and 'completion'" in capsys.readouterr().err
    assert main(["eval", "score", "--completions", str(comps)]) == 2
    assert "exactly one of benchmark, data or synthetic" in capsys.readouterr().err


def test_score_counts_tokens_with_a_tokenizer(eval_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "x", "problem": "2+3?", "answer": "5"}) + "\n")
    comps = tmp_path / "c.jsonl"
    comps.write_text(json.dumps({"id": "x", "completion": "add them </think> \\boxed{5}"}) + "\n")
    s = score(ScoreConfig.from_dict(dict(data=str(data), completions=str(comps), tokenizer=str(eval_model), thinking=True))).to_dict()
    assert s["accuracy"] == 1.0 and s["response_tokens_mean"] > s["thinking_tokens_mean"] > 0


CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def instruct_tokenizer(path: Path, template: str = CHATML) -> Path:
    """A byte-level tokenizer with an instruct chat template and no '<think>' tag (like SmolLM2's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|im_start|>", "<|im_end|>"], show_progress=False)
    tok.train_from_iterator(["What is 9 + 9? The total is 18."] * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>")
    fast.chat_template = template
    fast.save_pretrained(str(path))
    return path


def test_think_auto_forces_thinking_only_for_thinking_models(eval_model: Path, tmp_path: Path) -> None:
    from midtrain.eval.evaluate import thinks
    from midtrain.models.tokenizer import load_tokenizer

    plain = load_tokenizer(instruct_tokenizer(tmp_path / "chatml"))
    qwen3 = load_tokenizer(instruct_tokenizer(tmp_path / "qwen3", CHATML + "{% if enable_thinking %}<think>{% endif %}"))
    assert not thinks("auto", plain) and thinks("on", plain)
    assert thinks("auto", qwen3) and not thinks("off", qwen3)
    assert thinks("auto", load_tokenizer(eval_model))  # a midtrain tokenizer: '<think>' is one of its tags


def test_plain_instruct_boxed_answer_scores_under_think_auto(eval_model: Path, tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "add.jsonl"
    data.write_text(json.dumps({"id": "a", "problem": "What is 9 + 9?", "answer": "18"}) + "\n")
    seen: list[str] = []

    def instruct_answer(model, tokenizer, prompts, **kw):  # what SmolLM2-Instruct says: no thinking block
        seen.extend(prompts)
        return [[generation.Generation(text="9 + 9 = 18, so the answer is \\boxed{18}.", tokens=12, finished=True)] for _ in prompts]

    monkeypatch.setattr(generation, "generate", instruct_answer)
    base = dict(model=str(eval_model), tokenizer=str(instruct_tokenizer(tmp_path / "tok")), data=[str(data)], progress=False)
    run(EvalConfig.from_dict(dict(base, out=str(tmp_path / "auto"))))
    s = read_json(tmp_path / "auto" / "summary.json")
    assert s["prompt_format"] == "chat" and s["benchmarks"]["add"]["accuracy"] == 1.0
    assert seen[0].endswith("<|im_start|>assistant\n")  # no '<think>' forced on a plain instruct model
    run(EvalConfig.from_dict(dict(base, out=str(tmp_path / "on"), think="on")))  # the old default
    assert read_json(tmp_path / "on" / "summary.json")["benchmarks"]["add"]["accuracy"] == 0.0
    assert seen[-1].endswith("<think>\n")


def test_eval_under_a_pipe_logs_progress_lines(eval_model: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """No terminal (capsys is not a TTY): the bar is hidden, so plain progress lines must reach the log."""
    monkeypatch.setenv("MIDTRAIN_QUIET", "0")
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"id": f"m{i}", "problem": f"What is {i}+1?", "answer": str(i + 1)}) + "\n" for i in range(3)))

    def evaluate(out: str, every_s: float) -> list[str]:
        cfg = dict(model=str(eval_model), out=str(tmp_path / out), data=[str(data)], max_new_tokens=4, batch_size=1)
        run(EvalConfig.from_dict({**cfg, "prompt_format": "fewshot", "n_shots": 0, "progress_every_s": every_s}))
        return [line for line in capsys.readouterr().err.splitlines() if line.startswith("eval: ")]

    lines = evaluate("every", 0.0)  # a line per batch
    assert [line.split(" · ")[0] for line in lines] == ["eval: 1/3 (33%)", "eval: 2/3 (67%)", "eval: 3/3 (100%)"]
    assert "mine" in lines[0] and "tok/s" in lines[0] and "ETA" in lines[0] and "ETA" not in lines[-1]
    lines = evaluate("hourly", 3600.0)  # the interval is not reached: only the final line
    assert [line.split(" · ")[0] for line in lines] == ["eval: 3/3 (100%)"]
