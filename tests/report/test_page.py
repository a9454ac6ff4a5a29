"""The report page in a real headless Chromium: every plot decodes and draws, nothing is fetched."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from palm_middleware.report import compute_report, render_html
from palm_middleware.stores.memory import MemoryStore
from tests.chromium import COLOURS_JS, IMAGES_JS, browser, chromium_binary

from .seed import CANDIDATE, policy, portfolio, seed


@pytest.mark.timeout(600)
def test_page_renders_every_plot_offline(tmp_path: Path) -> None:
    chromium_binary()  # skip (fail under CI) before the work when there is no browser
    store = MemoryStore()
    pop = seed(store)
    report = compute_report(store, portfolio(), policy(), candidate=policy(CANDIDATE))
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    with browser() as tab:
        tab.open(page.as_uri())
        images = tab.evaluate(IMAGES_JS)
        colours = tab.evaluate(COLOURS_JS)
        text = tab.evaluate("document.body.innerText")
        shot = tab.screenshot()
        requested = tab.requested()
    plots = {i["plot"] for i in images}
    assert {"simplex", "marginals", "welfare", "bounds_cost", "evidence", "members"} <= plots
    assert "activity" in plots
    for img in images:
        assert img["complete"] and img["w"] > 100 and img["h"] > 100, img
    assert all(c > 3 for c in colours), colours  # drawn, not blank
    # Only the page itself was loaded: no CDN, no font or script fetched.
    assert [u for u in requested if not u.startswith("data:")] == [page.as_uri()]
    png = Image.open(io.BytesIO(shot))
    lo, hi = png.convert("L").getextrema()
    assert isinstance(lo, (int, float)) and isinstance(hi, (int, float))  # L mode: one band
    assert png.width >= 800 and hi - lo > 100  # ink on paper, not a blank screen
    assert "Population report" in text and "Cost of the bounds" in text
    for key, user in zip(pop.keys, pop.users):
        assert key not in text and user not in text
