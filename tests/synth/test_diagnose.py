from midtrain.synth import generate_problems
from midtrain.synth.diagnose import label_compact, skill_accuracy, trace_and_direct_accuracy


def test_labels_of_a_forward_compact_trace():
    c = "a=2.b=3*a=3*2=6.</solution><answer>6</answer>"
    lab = label_compact(c)
    assert len(lab) == len(c)
    by = lambda i: lab[i]  # noqa: E731
    assert by(0) == "plan" and by(1) == "format" and by(2) == "fact" and by(3) == "format"
    assert [lab[i] for i in range(4, 15)] == ["plan", "format", "fact", "fact", "fact", "format", "copy", "copy", "copy", "format", "arith"]
    assert lab[c.index("<answer>") + len("<answer>")] == "answer"
    assert lab[c.index("</solution>")] == "format"


def test_reverse_clause_is_solve():
    lab = label_compact("m=1.n=l+m=l+1.l+1=7:l=6.</solution><answer>6</answer>")
    s, f = "solve", "format"
    assert lab[14:23] == [s, s, s, f, s, f, s, f, s]  # l+1=7:l=6
    assert lab[4] == "plan" and lab[6:9] == ["fact"] * 3 and lab[10:13] == ["arith"] * 3


def test_diagnostics_run_on_a_tiny_model(nano_model):
    from midtrain.models import load_model, load_tokenizer

    probs = generate_problems(n=6, ops="2-3", render="compact", modulus=10, order="dependency", seed=1)
    model, tok = load_model(nano_model), load_tokenizer(nano_model)
    acc = skill_accuracy(model, tok, probs, batch_size=4)
    assert set(acc) <= {"plan", "fact", "copy", "arith", "solve", "answer", "format"} and "arith" in acc
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    res = trace_and_direct_accuracy(model, tok, probs, max_new_tokens=8, batch_size=4)
    assert res["trace_acc"] == 0.0 and set(res["by_op"]) <= {2, 3}
