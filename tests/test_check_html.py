"""bench/check_html.py finds in a real headless browser what a reader would see broken."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("selenium")
if not shutil.which("chromedriver"):
    pytest.skip("no chromedriver (Debian: chromium-driver)", allow_module_level=True)


def _load_script():
    """bench/check_html.py as a module of its own name (the name ``bench`` is the benchmark
    script's, bench/bench.py, which other tests import from bench/)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "check_html.py"
    spec = importlib.util.spec_from_file_location("check_html_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_html = _load_script()

PAGE = """<html><body><main>
<p>fine</p><img src="{img}"><a href="#there">here</a><a href="other.html#x">other</a>
<p>{glue}</p>{extra}
<div id="there"></div>
<script>{script}</script>
</main></body></html>"""


def _page(tmp_path, **parts):
    values = dict(img="ok.png", glue="", script="", extra="")
    values.update(parts)
    import matplotlib.pyplot as plt
    import numpy as np

    plt.imsave(tmp_path / "ok.png", np.zeros((4, 4)))
    page = tmp_path / "page.html"
    page.write_text(PAGE.format(**values))
    (tmp_path / "other.html").write_text('<html><body><div id="x"></div></body></html>')
    return page


@pytest.fixture(scope="module")
def browser():
    d = check_html.driver()
    yield d
    d.quit()


def test_a_sound_page_passes(browser, tmp_path):
    assert check_html.check_page(browser, _page(tmp_path), tmp_path) == []


def test_a_broken_page_is_reported_problem_by_problem(browser, tmp_path):
    page = _page(tmp_path, img="missing.png", glue="{glue:text}`lost_number`",
                 script="console.error('boom')",
                 extra='<span class="math">\\(x^2\\)</span><span class="xref std std-ref">fig-missing</span>'
                       '<a href="#nowhere">a</a>')
    problems = "\n".join(check_html.check_page(browser, page, tmp_path))
    assert "image did not load: missing.png" in problems
    assert "unresolved glue: {glue:text}`lost_number`" in problems
    assert "unresolved cross-reference: fig-missing" in problems
    assert "1 of 1 math elements not rendered" in problems           # no MathJax on this page
    assert "console error" in problems and "boom" in problems
    assert "broken link #nowhere (no element with that id)" in problems


def test_the_built_book_passes_when_it_has_been_built():
    html = check_html.ROOT / "_build" / "html"
    if not (html / "book" / "intro.html").exists():
        pytest.skip("the book is not built (make html)")
    pages = check_html.toc_pages(html)
    assert pages[0].name == "intro.html" and any(p.name == "references.html" for p in pages)
