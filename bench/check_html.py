"""Open every page of the built book in headless Chromium and fail on what a reader would see broken.

    make check-html                       # builds the HTML, then checks it
    python bench/check_html.py [_build/html] [--screenshot FILE]

For each page listed in the book's table of contents it checks, after the page's scripts have run:

- every image has loaded (``naturalWidth > 0``);
- no glue reference is left unresolved (MyST-NB's ``{glue...}`` text or its "missing" marker);
- every internal link points at a page that exists and, with a ``#fragment``, at an element with
  that id on it; no cross-reference role was left unresolved (``???`` or a bare ``xref`` span);
- math is rendered: MathJax typeset every ``.math`` element (no raw ``\\(`` or ``$$`` left);
- the browser console shows no errors.

It saves a screenshot of the deep-CNN chapter's Fig. 3 (``--screenshot``, default
``_build/check-html/fig3.png``). Needs Chromium, chromedriver (Debian: ``chromium``,
``chromium-driver``) and selenium. Exit status 1 and one line per problem if any is found.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

ROOT = Path(__file__).resolve().parent.parent

PAGE_JS = r"""
const out = {images: [], links: [], ids: [], raw_math: 0, math: 0, typeset: 0, glue: [], xref: []};
for (const img of document.querySelectorAll('article img, main img')) {
  if (!(img.complete && img.naturalWidth > 0)) out.images.push(img.getAttribute('src'));
}
for (const a of document.querySelectorAll('main a[href]')) out.links.push(a.getAttribute('href'));
for (const el of document.querySelectorAll('[id]')) out.ids.push(el.id);
const text = (document.querySelector('main') || document.body).innerText;
for (const m of text.matchAll(/\{glue[^}]*\}`[^`]*`/g)) out.glue.push(m[0]);
for (const el of document.querySelectorAll('.pasted-text, .pasted-inline')) {
  if (/missing/i.test(el.textContent)) out.glue.push(el.textContent.slice(0, 60));
}
for (const el of document.querySelectorAll('main .xref:not(a .xref)')) {
  if (!el.closest('a')) out.xref.push(el.textContent.slice(0, 60));
}
if (text.includes('???')) out.xref.push('???');
out.math = document.querySelectorAll('main .math').length;
out.typeset = document.querySelectorAll('main mjx-container').length;
for (const el of document.querySelectorAll('main .math')) {
  if (!el.querySelector('mjx-container') && !el.closest('mjx-container')) out.raw_math += 1;
}
return out;
"""


def toc_pages(html: Path) -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        for key in ("parts", "chapters", "sections"):
            for entry in node.get(key, []):
                if "file" in entry:
                    files.append(entry["file"])
                walk(entry)

    walk(toc)
    return [html / f"{f}.html" for f in files]


def driver():
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    path = shutil.which("chromedriver")             # the system's, not one downloaded
    return webdriver.Chrome(options=opts, service=Service(path) if path else None)


def wait_for_math(d, timeout: float = 20.0) -> None:
    """Until MathJax (if the page loads it) has finished typesetting."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = d.execute_script(
            "if (!window.MathJax) return document.querySelector('script[src*=mathjax]') ? 'loading' : 'none';"
            "if (!MathJax.startup || !MathJax.startup.promise) return 'loading';"
            "if (window.__mj === undefined) { window.__mj = 'wait'; "
            "MathJax.startup.promise.then(() => { window.__mj = 'done'; }); }"
            "return window.__mj;")
        if state in ("done", "none"):
            return
        time.sleep(0.2)


def check_page(d, page: Path, html: Path) -> list[str]:
    d.get(page.as_uri())
    d.execute_script("return document.readyState")
    wait_for_math(d)
    found = d.execute_script(PAGE_JS)
    name = page.relative_to(html).as_posix()
    problems = [f"{name}: image did not load: {src}" for src in found["images"]]
    problems += [f"{name}: unresolved glue: {g}" for g in found["glue"]]
    problems += [f"{name}: unresolved cross-reference: {x}" for x in found["xref"]]
    if found["raw_math"]:
        problems.append(f"{name}: {found['raw_math']} of {found['math']} math elements not rendered")
    ids = set(found["ids"])
    for href in found["links"]:
        url = urlparse(href)
        if url.scheme in ("http", "https", "mailto", "data", "javascript"):
            continue
        target = (page.parent / unquote(url.path)).resolve() if url.path else page
        if not target.exists():
            problems.append(f"{name}: broken link {href} (no {target.relative_to(html.resolve()) if target.is_relative_to(html.resolve()) else target})")
        elif url.fragment and target == page and url.fragment not in ids:
            problems.append(f"{name}: broken link {href} (no element with that id)")
        elif url.fragment and target != page and target.suffix == ".html":
            if f'id="{url.fragment}"' not in target.read_text(errors="replace"):
                problems.append(f"{name}: broken link {href} (no element with that id on {target.name})")
    for entry in d.get_log("browser"):
        if entry.get("level") == "SEVERE":
            problems.append(f"{name}: console error: {entry.get('message', '')[:200]}")
    return problems


def screenshot(d, html: Path, out: Path) -> None:
    """The deep-CNN chapter's Fig. 3, scrolled into view."""
    d.get((html / "book" / "deep_cnn.html").as_uri())
    wait_for_math(d)
    d.execute_script("const f = document.getElementById('fig-dcnn-grid') || document.querySelector('figure');"
                     "if (f) f.scrollIntoView({block: 'start'});")
    time.sleep(0.5)
    out.parent.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(out))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", nargs="?", default=str(ROOT / "_build" / "html"))
    ap.add_argument("--screenshot", default=str(ROOT / "_build" / "check-html" / "fig3.png"))
    args = ap.parse_args(argv)
    html = Path(args.html).resolve()
    pages = toc_pages(html)
    missing = [p for p in pages if not p.exists()]
    if missing:
        print(f"check-html: {len(missing)} page(s) not built, e.g. {missing[0]}; run make html first",
              file=sys.stderr)
        return 1
    try:
        d = driver()
    except Exception as err:                    # noqa: BLE001 - no browser, no driver, no selenium
        print(f"check-html: cannot start headless Chromium ({type(err).__name__}: "
              f"{str(err).splitlines()[0] if str(err) else ''}); install chromium, chromium-driver "
              "and selenium", file=sys.stderr)
        return 1
    problems = []
    try:
        for page in pages:
            problems += check_page(d, page, html)
        screenshot(d, html, Path(args.screenshot))
    finally:
        d.quit()
    for line in problems:
        print(line)
    print(f"check-html: {len(pages)} pages, {len(problems)} problem(s); screenshot {args.screenshot}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
