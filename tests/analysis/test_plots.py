"""midtrain.analysis.plots: the one CKA plot shared by ``analyze cka`` and ``midtrain report``."""

from __future__ import annotations


def test_one_cka_plot_for_analysis_and_report(tmp_path):
    """plot_cka draws what analyze cka writes and what the report finds (partial results included), at one DPI."""
    from midtrain.analysis.plots import cka_curves, plot_cka
    from midtrain.plots import DPI

    data = {
        "per_layer": [1.0, 0.9],
        "pooling": "mean",
        "estimator": "full",
        "probes": {"a": {"rows": 8, "per_layer": [1.0, 0.8]}, "b": {"rows": 6, "per_layer": [1.0, None]}},
    }
    assert list(cka_curves(data)) == ["mean over probes", "a (n=8)", "b (n=6)"]
    assert list(cka_curves({"per_layer": [1.0], "probes": {"a": {"per_layer": [1.0]}}})) == ["a"]  # one probe: no mean
    assert list(cka_curves({"per_layer": [1.0, 0.5]})) == ["mean over probes"]  # an older result without probes
    assert plot_cka({"min_cka": 1.0}, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    png = plot_cka(data, tmp_path / "c.png", title="run")
    head = png.read_bytes()
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    phys = head.index(b"pHYs") + 4  # pixels per metre, x then y
    assert round(int.from_bytes(head[phys : phys + 4], "big") * 0.0254) == DPI
    assert [p.name for p in tmp_path.iterdir()] == ["c.png"]  # written atomically: no temporary file left
