"""The HTML report in a real headless browser (Debian's ``chromium``): at a 1280 px window nothing overflows the
page sideways and every image loads. Skips where no browser is installed (``.ci/run`` installs one as root)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_support import demo_experiment

from midtrain.experiment.report import build

WIDTH = 1280
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)
# Appended to a copy of the page: once it has loaded, the measurements go into an attribute that --dump-dom shows.
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const scroll = document.documentElement.scrollWidth;
  const wide = [...document.body.children].filter(e => e.getBoundingClientRect().right > innerWidth + 0.5).map(e => e.tagName);
  document.body.setAttribute('data-probe', JSON.stringify({scroll, width: innerWidth, images: imgs.length, broken, wide}));
});</script>"""


@pytest.fixture(scope="module")
def exe() -> str:
    """The installed headless browser; the tests skip (before building anything) where there is none."""
    found = next((p for b in BROWSERS if (p := shutil.which(b))), None)
    if found is None:
        pytest.skip("no headless browser (apt-get install chromium)")
    return found


def run_browser(exe: str, page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / "profile"  # a fresh profile: no state from any earlier run
    cmd = [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},900", "--virtual-time-budget=10000", *extra, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    runs, sections = demo_experiment(root / "runs")
    out = root / "report"
    _, html, plots = build(runs, "midtrain demo: thinking mid-training in a synthetic world", out, extra=sections)
    assert len(plots) >= 10  # claims, arms, accuracy vs op, RL curves, loss, analysis
    (out / "report.html").write_text(html, encoding="utf-8")
    return out / "report.html"


def test_the_report_fits_1280px_and_every_image_loads(exe: str, report: Path, tmp_path: Path):
    page = tmp_path / "probe.html"
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = run_browser(exe, page, tmp_path, "--dump-dom")
    m = re.search(r"data-probe=\"([^\"]*)\"", done.stdout)
    assert m, f"the page's probe did not run (exit {done.returncode}): {done.stderr[-2000:]}"
    got = json.loads(m.group(1).replace("&quot;", '"'))
    assert got["width"] == WIDTH and got["scroll"] <= WIDTH, f"the page scrolls sideways: {got}"
    assert not got["wide"], f"elements wider than the window: {got['wide']}"
    assert got["images"] == report.read_text(encoding="utf-8").count("<img ") >= 10 and not got["broken"], got


def test_a_screenshot_of_the_report(exe: str, report: Path, tmp_path: Path):
    """What a researcher sees (kept under the test's tmp dir to look at): a PNG of the first screen."""
    shot = tmp_path / "report.png"
    done = run_browser(exe, report, tmp_path, f"--screenshot={shot}")
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", done.stderr[-2000:]
