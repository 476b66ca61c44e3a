"""The pages at the paper's scale (book/paper/): CI never executes them (hours on a CPU), so what
is checked is what they store: every claim holds, the run they record is the chapter's current
paper profile, and the book's table of contents and the part's index list exactly them. Then how a
page is made (identlib.paper), on a small chapter."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import yaml

from identlib import chapters as ch
from identlib import paper
from identlib.claims import Claim, read_notebook as read_claims
from identlib.config import ConfigError
from test_chapters import write_chapter

ROOT = Path(__file__).resolve().parent.parent
STORED = sorted(paper.stored())


def test_only_chapters_with_a_paper_profile_are_stored():
    assert set(STORED) <= set(paper.pages())
    assert {chapter for chapter, _ in paper.pages().values()} == set(paper.with_paper_profile())


@pytest.mark.parametrize("name", STORED)
def test_no_stored_claim_fails_silently(name):
    """A claim written for the chapter's default settings may not hold at the paper's scale; the
    page then says so under its title, naming each one (and the chapter at its own scale says what
    differs). A page's note is always what its record and claims table give."""
    claims = [Claim(**c) for c in read_claims(paper.stored()[name])]
    assert claims, f"book/paper/{name}.ipynb stores no claims table"
    nb = ch.read_notebook(paper.stored()[name])
    note = paper.note_cell(nb).source
    for c in claims:
        assert (f"*{c.name}*" in note) == (not c.holds), c.name
    assert note == paper._note(nb.metadata["identlib"]["run"], paper.failed_claims(nb))


@pytest.mark.parametrize("name", STORED)
def test_the_stored_run_is_the_current_paper_profile(name):
    """A page made with an older profile would show settings the profile no longer has:
    `make paper` (or `identlib refresh --profile paper NAME`) makes it again."""
    record = paper.record(name)
    assert record == ch.read_notebook(paper.stored()[name]).metadata["identlib"]["run"]
    assert (record["chapter"], record["profile"]) == paper.pages()[name]
    profile = json.loads(json.dumps(ch.resolve(*paper.pages()[name][:1], None, record["profile"])))
    if profile.get("precision") == "auto":               # stored as what it became on that machine
        assert record["parameters"].get("precision") in ("bf16", "float32")
        profile["precision"] = record["parameters"]["precision"]
    assert record["parameters"] == profile
    assert record["date"] and record["wall_seconds"] >= 0
    assert {"cpu", "device", "instruction_set", "torch"} <= set(record["machine"])
    assert 0 <= record["trained"] <= record["networks"]


def test_the_book_lists_exactly_the_stored_pages():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert toc["parts"][-1] == paper.toc_part()
    index = (ROOT / "book" / "paper" / "index.md").read_text()
    assert paper.index_text() in index, "run identlib.paper.index() (make paper does)"


def test_no_stored_page_is_a_chapter_or_collected_by_nbval():
    assert not set(ch.chapters().values()) & set(paper.stored().values())
    assert 'collect_ignore = ["book/paper"]' in (ROOT / "conftest.py").read_text()


# --- how a page is made -------------------------------------------------------------------------

def _executed_chapter() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    title = nbformat.v4.new_markdown_cell("# Mini\n\nSee {numref}`fig-mini-a` and {doc}`protocol`.")
    fig = nbformat.v4.new_code_cell("plot()")
    fig.metadata["mystnb"] = {"figure": {"name": "fig-mini-a", "caption": "A."}}
    prose = nbformat.v4.new_markdown_cell(
        "{numref}`fig-mini-a` again, not fig-mini-ab; {doc}`the runtime <runtime>`; "
        "[linear](linear_fcn.ipynb), [web](https://arxiv.org/abs/1902.04698), [here](#claims); "
        "{doc}`paper/index`, {doc}`the stored run <paper/mini>`.\n\n"
        "````{exercise}\n:label: mini-ex-1\n\nWhy?\n````\n\n````{solution} mini-ex-1\nBecause.\n````")
    nb.cells = [title, fig, prose]
    return nb


def test_a_page_renames_its_labels_and_points_back_to_the_book():
    record = paper.run_record("mini", {"channels": 128}, 3725.0, networks=4, trained=3)
    nb = paper.paper_copy(_executed_chapter(), record)
    title, note, fig, prose = nb.cells
    assert title.source.startswith("# Mini, at the paper's scale\n")
    assert "{numref}`paper-fig-mini-a`" in title.source and "{doc}`../protocol`" in title.source
    assert fig.metadata["mystnb"]["figure"]["name"] == "paper-fig-mini-a"
    assert "{numref}`paper-fig-mini-a` again, not fig-mini-ab" in prose.source
    assert "{doc}`the runtime <../runtime>`" in prose.source
    assert ":label: paper-mini-ex-1" in prose.source and "{solution} paper-mini-ex-1" in prose.source
    assert "[linear](../linear_fcn.ipynb)" in prose.source
    assert "{doc}`./index`, {doc}`the stored run <./mini>`" in prose.source      # pages beside it
    assert "(https://arxiv.org/abs/1902.04698)" in prose.source and "[here](#claims)" in prose.source
    assert "`channels = 128`" in note.source and "1 h 02 min" in note.source
    assert "training 3 of the 4 networks" in note.source and "{doc}`../mini`" in note.source
    assert "Every claim of the chapter holds" in note.source
    assert nb.metadata["identlib"]["run"] == record


def test_a_page_leaves_out_the_chapters_comparison_with_it():
    nb = _executed_chapter()
    own = nbformat.v4.new_markdown_cell("## At the paper's scale\n\nThe stored page says {glue:text}`x`.")
    own.metadata["tags"] = [paper.CHAPTER_ONLY]
    nb.cells.insert(2, own)
    page = paper.paper_copy(nb, paper.run_record("mini", {}, 60.0))
    assert len(page.cells) == 4 and not any("At the paper's scale" in c.source for c in page.cells[2:])


def _write_mini(book: Path, params: str = "", body: str = "") -> None:
    """The mini chapter: a title, the parameter ``n`` (and ``params``), ``body``, one claim."""
    write_chapter(book / "mini.ipynb", "n = 1  # choice: how many [int ≥ 1]" + params,
                  "import identlib as il\n"
                  "base, p, claims = il.chapter('mini', globals())\n" + body +
                  "claims.check('n is small', p.n, '<=', 3, n=1, over='settings')\n"
                  "claims.table()")
    nb = nbformat.read(book / "mini.ipynb", as_version=4)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("# Mini"))
    nbformat.write(nb, book / "mini.ipynb")


@pytest.fixture
def mini_book(tmp_path, monkeypatch):
    book = tmp_path / "book"
    _write_mini(book)
    (book / "profiles" / "mini").mkdir(parents=True)
    (book / "profiles" / "mini" / "paper.yaml").write_text("# Paper scale: n = 2. About a second.\nn: 2\n")
    (book / "paper").mkdir()
    (book / "paper" / "index.md").write_text(f"# Paper\n\n{paper.INDEX_START}\n{paper.INDEX_END}\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/mini\nparts:\n- caption: Chapters\n"
                                       "  chapters:\n  - file: book/mini\n")
    monkeypatch.setenv("IDENTLIB_BOOK_DIR", str(book))
    monkeypatch.setenv("IDENTLIB_CACHE_DIR", str(tmp_path / "cache"))
    return book


def test_store_executes_the_paper_profile_and_lists_the_page(mini_book):
    index = mini_book / "paper" / "index.md"
    assert "not yet run" in paper.index(index).read_text()
    page = paper.store("mini", progress=False)
    assert page == mini_book / "paper" / "mini.ipynb"
    record = ch.read_notebook(page).metadata["identlib"]["run"]
    assert record["parameters"] == {"n": 2} and record["machine"]["device"] == "cpu"
    assert [c.holds for c in map(lambda c: Claim(**c), read_claims(page))] == [True]
    assert "1 of 1 of the chapter's claims hold" in index.read_text() and "{doc}`../mini`" in index.read_text()
    toc = yaml.safe_load((mini_book.parent / "_toc.yml").read_text())
    assert toc["parts"][-1]["chapters"] == [{"file": "book/paper/index"}, {"file": "book/paper/mini"}]


def test_a_pages_run_leaves_out_the_chapters_own_cells(mini_book):
    # a cell tagged chapter-only (the chapter quoting its stored pages) does not run for the page:
    # its claims would stand in the page's table without the cell that checked them
    nb = nbformat.read(mini_book / "mini.ipynb", as_version=4)
    own = nbformat.v4.new_code_cell("claims.check('only in the chapter', 1, '==', 2, n=1, over='pages')")
    own.metadata["tags"] = [paper.CHAPTER_ONLY]
    nb.cells.insert(len(nb.cells) - 1, own)
    nbformat.write(nb, mini_book / "mini.ipynb")
    page = paper.store("mini", progress=False)
    assert [c["name"] for c in read_claims(page)] == ["n is small"]
    assert not any(paper.CHAPTER_ONLY in c.metadata.get("tags", []) for c in ch.read_notebook(page).cells)


def test_a_failing_paper_run_keeps_the_stored_page(mini_book):
    page = paper.store("mini", progress=False)
    stored = page.read_text()
    (mini_book / "profiles" / "mini" / "paper.yaml").write_text("n: 5\n")     # the claim fails
    with pytest.raises(ch.ChapterError, match="stored paper-scale page is unchanged"):
        paper.store("mini", progress=False)
    assert page.read_text() == stored
    assert (mini_book / "paper" / ".mini.failed.ipynb").exists()


def test_a_chapter_without_a_paper_profile_is_refused(mini_book):
    (mini_book / "profiles" / "mini" / "paper.yaml").unlink()
    with pytest.raises(ConfigError, match="has no paper profile"):
        paper.store("mini", progress=False)


def test_the_command_line_refuses_what_has_no_paper_page_before_running_anything():
    from test_cli_errors import identlib, last_line

    proc = identlib("refresh", "--profile", "paper", "linear_fcn", "intro")
    assert proc.returncode == 2 and "chapter intro has no paper profile" in last_line(proc)
    proc = identlib("refresh", "--profile", "paper", "nosuch")
    assert proc.returncode == 2 and "unknown chapter 'nosuch'" in last_line(proc)


def _glued(notebook: Path, name: str) -> str:
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("metadata", {}).get("scrapbook", {}).get("name") == name:
                return out["data"]["application/papermill.record/text/plain"]
    raise KeyError(name)


def test_the_runtime_page_lists_every_stored_run():
    """`make paper` executes the Runtime page again after storing a run; a page stored without it
    would be missing from the page's table."""
    assert int(_glued(ROOT / "book" / "runtime.ipynb", "rt_paper_pages")) == len(STORED)
    assert int(_glued(ROOT / "book" / "runtime.ipynb", "rt_paper_profiles")) == len(paper.with_paper_profile())


def test_a_chapter_reads_what_its_paper_page_glued(mini_book):
    assert paper.glued("mini") == {} and paper.record("mini") == {}
    nb = nbformat.read(mini_book / "mini.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("il.glue('mini_n', p.n)\nil.glue('mini_name', 'two')"))
    nbformat.write(nb, mini_book / "mini.ipynb")
    paper.store("mini", progress=False)
    assert paper.glued("mini") == {"mini_n": 2, "mini_name": "two"}
    assert paper.record("mini")["parameters"]["n"] == 2


def test_a_page_names_the_claims_that_do_not_hold_at_its_scale(mini_book):
    (mini_book / "profiles" / "mini" / "paper.yaml").write_text("n: 5\n")
    import os

    os.environ["IDENTLIB_CLAIMS"] = "report"
    try:
        page = paper.store("mini", progress=False)
    finally:
        del os.environ["IDENTLIB_CLAIMS"]
    nb = ch.read_notebook(page)
    note = paper.note_cell(nb).source
    assert "1 of the chapter's claims" in note and "*n is small*" in note and "IDENTLIB_CLAIMS=report" in note
    assert nb.metadata["identlib"]["run"]["claims"] == "report"
    assert "0 of 1 of the chapter's claims hold" in (mini_book / "paper" / "index.md").read_text()


def test_a_resumed_run_says_so_beside_its_wall_time():
    assert paper._resumed({"networks": 356, "trained": 0}) == (
        " (resumed: 0 of its 356 networks trained in it; the profile states the cost)")
    assert paper._resumed({"networks": 30, "trained": 30}) == ""
    assert paper._resumed({}) == ""
    first = {"date": "2026-12-07", "cpu": "x", "wall_seconds": 2908, "trained": 267}
    assert paper._resumed({"networks": 267, "trained": 0, "first": first}) == (
        " from the results cache (the run that trained it: 48 min)")


def test_a_profile_s_precision_auto_is_stored_as_the_precision_the_run_computed_in(mini_book, monkeypatch):
    """``precision: auto`` runs in bf16 where the hardware has bfloat16 instructions and in float32
    elsewhere; the chapter is executed with, and the page records, the precision it became."""
    from identlib import runtime

    _write_mini(mini_book, '\nprecision = "float32"', "print('computes in', base.precision)\n")
    (mini_book / "profiles" / "mini" / "paper.yaml").write_text("n: 2\nprecision: auto\n")
    for native in ("bf16", "float32"):
        monkeypatch.setattr(runtime, "native_precision", lambda dev=None: native)
        page = paper.store("mini", progress=False)
        record = ch.read_notebook(page).metadata["identlib"]["run"]
        assert record["parameters"] == {"n": 2, "precision": native}
        outputs = "".join(o.get("text", "") for c in ch.read_notebook(page).cells
                          if c.cell_type == "code" for o in c.get("outputs", []))
        assert f"computes in {native}" in outputs


def test_a_profile_paper_what_is_a_page_of_its_own(mini_book):
    """A profile ``paper-<what>`` (a run larger than the chapter's defaults, smaller than the
    paper's) is stored beside the paper page: its own name, title, label prefix, note and row."""
    (mini_book / "profiles" / "mini" / "paper-more.yaml").write_text(
        "# With more of them: n = 3. About a second.\nn: 3\n")
    assert paper.pages() == {"mini": ("mini", "paper"), "mini-more": ("mini", "paper-more")}
    page = paper.store("mini-more", progress=False)
    assert page == mini_book / "paper" / "mini-more.ipynb"
    assert not (mini_book / "paper" / "mini.ipynb").exists()
    nb = ch.read_notebook(page)
    assert nb.cells[0].source.startswith("# Mini, with more of them")
    assert paper.note_cell(nb).source.startswith(":::{note} A stored run")
    assert "executed with its `paper-more` profile (`n = 3`)" in paper.note_cell(nb).source
    assert paper.record("mini-more")["profile"] == "paper-more" and paper.record("mini") == {}
    index = (mini_book / "paper" / "index.md").read_text()
    assert "{doc}`../mini`, profile `paper-more` | {doc}`" in index and "<mini-more>`" in index
    assert "| {doc}`../mini` | not yet run | Paper scale: n = 2." in index
    assert paper.toc_part()["chapters"] == [{"file": "book/paper/index"}, {"file": "book/paper/mini-more"}]
    labelled = paper.paper_copy(_executed_chapter(), paper.run_record("mini", {}, 1.0, profile="paper-more"))
    assert labelled.cells[2].metadata["mystnb"]["figure"]["name"] == "paper-more-fig-mini-a"
    with pytest.raises(ConfigError, match="unknown chapter 'mini-less'"):
        paper.check("mini-less")


def test_identlib_claims_passes_a_page_whose_failing_claims_its_note_names(tmp_path):
    """`make claims` checks every stored page: a claim that fails at the page's scale is fine when
    the page's note names it, and fails the command when it does not (a page stored before the
    note was written, or edited by hand)."""
    from test_cli_errors import identlib, last_line

    name = next(n for n in STORED if paper.failed_claims(paper.stored()[n]))
    page = tmp_path / f"{name}.ipynb"
    page.write_text(paper.stored()[name].read_text())
    proc = identlib("claims", str(page))
    assert proc.returncode == 0 and "named in its note" in proc.stdout
    nb = ch.read_notebook(page)
    first = paper.failed_claims(nb)[0]
    cell = paper.note_cell(nb)
    cell.source = cell.source.replace(f"*{first}*", "")
    nbformat.write(nb, page)
    proc = identlib("claims", str(page))
    assert proc.returncode == 1 and repr(first) in last_line(proc)


def test_a_page_executed_again_from_the_cache_names_the_run_that_trained_it(tmp_path):
    stored = tmp_path / "mini.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["identlib"] = {"run": paper.run_record("mini", {"n": 2}, 2908.0, networks=267, trained=267,
                                                       profile="paper-wide")}
    nbformat.write(nb, stored)
    again = paper.run_record("mini", {"n": 2}, 9.0, networks=267, trained=0, profile="paper-wide")
    record = paper.with_first_run(again, stored)
    assert record["first"]["trained"] == 267 and record["first"]["wall_seconds"] == 2908
    assert "48 min of wall time, training 267 of them" in paper._note(record)
    assert paper.with_first_run(paper.with_first_run(again, stored), stored)["first"] == record["first"]
    # another profile's or other parameters' page, or a run that trained everything: its own record
    assert "first" not in paper.with_first_run({**again, "parameters": {"n": 3}}, stored)
    assert "first" not in paper.with_first_run({**again, "trained": 267}, stored)
    assert "first" not in paper.with_first_run(again, tmp_path / "none.ipynb")
