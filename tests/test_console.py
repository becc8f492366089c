"""Console output: progress lines when stderr is not a terminal."""

from __future__ import annotations

from rich.progress import Progress

from midtrain.console import LineProgress, clock, progress


def test_clock():
    assert [clock(s) for s in (0, 59.9, 61, 3600, 3725, -3)] == ["0:00", "0:59", "1:01", "1:00:00", "1:02:05", "0:00"]


def test_progress_logs_lines_without_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv("MIDTRAIN_QUIET", "0")  # capsys's stderr is not a TTY: the bar is off, the lines are on
    with progress(log_every_s=0) as bar:
        assert isinstance(bar, LineProgress) and bar.lines
        task = bar.add_task("work", total=4, info="")
        bar.advance(task, 1)
        bar.update(task, advance=2, info="fast")
        bar.update(task, advance=1)
        bar.update(task, info="again")  # already complete: no second final line
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" · ")[0] for line in lines] == ["work: 1/4 (25%)", "work: 3/4 (75%)", "work: 4/4 (100%)"]
    assert "ETA" in lines[0] and lines[1].split(" · ")[1] == "fast" and "ETA" not in lines[2]


def test_progress_lines_wait_for_the_interval_and_respect_quiet(capsys, monkeypatch):
    monkeypatch.setenv("MIDTRAIN_QUIET", "0")
    with progress(log_every_s=3600) as bar:
        task = bar.add_task("work", total=3, info="")
        for _ in range(3):
            bar.advance(task)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("work: 3/3 (100%) · ") and lines[0].endswith(" elapsed")
    monkeypatch.setenv("MIDTRAIN_QUIET", "1")
    with progress(log_every_s=0) as bar:
        task = bar.add_task("work", total=1, info="")
        bar.advance(task)
    assert capsys.readouterr().err == ""
    assert type(progress()) is Progress  # without log_every_s: the plain bar, as before


def test_fmt_num_is_the_one_number_formatter():
    from midtrain.console import fmt_num

    assert [fmt_num(v) for v in (0.123456, 3, True, None, "x")] == ["0.1235", "3", "true", "n/a", "x"]
    assert fmt_num(float("nan"), ".3f") == "nan" and fmt_num(float("inf")) == "inf"  # a diverged value shows
    assert (fmt_num(2.5e-7, ".4g"), fmt_num(0.1, "+.3f"), fmt_num(None, missing="")) == ("2.5e-07", "+0.100", "")
