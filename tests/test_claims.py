"""Claims: the check, its stable line, its failure, the claims table, glue, ``identlib claims``, and
a chapter that fails loudly when one of its claims does not hold."""
from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import numpy as np
import pytest
import torch

from identlib import chapters as ch
from identlib.claims import MIME, Claim, Claims, ClaimFailed, glue, read_notebook
from identlib.cli import main
from test_chapters import write_chapter


def test_a_claim_that_holds_prints_a_line_without_its_digits(capsys):
    claims = Claims()
    c = claims.check("deep memorizes", np.float64(0.9934), ">=", 0.9, n=3, over="seeds")
    line = capsys.readouterr().out
    assert line == "claim 'deep memorizes': holds (value >= 0.9 over 3 seeds)\n"
    assert "0.99" not in line                      # the digits may differ on another machine
    assert c.holds and isinstance(c.value, float)


@pytest.mark.parametrize("value, op, threshold, holds", [
    (0.5, "<", 0.6, True), (0.6, "<", 0.6, False), (0.6, "<=", 0.6, True), (3, "==", 3, True),
    (0.2, "in", (0.1, 0.3), True), (0.4, "in", (0.1, 0.3), False), (float("nan"), ">=", 0.0, False),
    (torch.tensor(0.95), ">", 0.9, True),
])
def test_the_rule_decides(value, op, threshold, holds):
    claims = Claims()
    if holds:
        assert claims.check("c", value, op, threshold, n=1).holds
    else:
        with pytest.raises(ClaimFailed):
            claims.check("c", value, op, threshold, n=1)
    assert claims.claims[0].holds is holds                # a failed claim is still recorded


def test_a_failing_claim_names_itself_its_value_and_its_threshold():
    with pytest.raises(ClaimFailed, match=r"claim 'depth-20 constant' fails: 0.41 is not >= 0.9 \(3 seeds\)"):
        Claims().check("depth-20 constant", 0.41, ">=", 0.9, n=3, over="seeds")
    with pytest.raises(ClaimFailed, match=r"0.5 is not in \[0.1, 0.3\] \(12 inputs\)"):
        Claims().check("range", 0.5, "in", [0.1, 0.3], n=12, over="inputs")


def test_bad_claims_are_refused():
    claims = Claims()
    with pytest.raises(ValueError, match="op must be one of"):
        claims.check("c", 1.0, "~", 1.0, n=1)
    with pytest.raises(TypeError, match="must be a number"):
        claims.check("c", "high", ">=", 1.0, n=1)
    claims.check("c", 1.0, ">=", 0.0, n=1)
    with pytest.raises(ValueError, match="stated twice"):
        claims.check("c", 1.0, ">=", 0.0, n=1)


def test_the_table_compares_rules_and_shows_values(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    claims = Claims()
    claims.check("a", 0.987, ">=", 0.9, n=3)
    claims.check("b", 0.123, "<", 0.5, n=12, over="inputs")
    claims.table()
    bundle = shown[0]
    assert bundle["text/plain"].splitlines() == ["holds  a  (value >= 0.9, 3 seeds)",
                                                 "holds  b  (value < 0.5, 12 inputs)", "2 of 2 claims hold"]
    assert "0.987" in bundle["text/html"] and "0.987" not in bundle["text/plain"]
    assert [Claim(**c) for c in bundle[MIME]] == claims.claims


def test_a_value_that_is_not_finite_is_stored_as_text_json_can_hold(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    claims = Claims(strict=False)
    claims.check("first depth of the '7'", float("inf"), "<=", 4, n=5)
    claims.table()
    stored = json.loads(json.dumps(shown[0][MIME], allow_nan=False))     # strict JSON
    assert stored[0]["value"] == "inf"
    assert [Claim(**c) for c in read_notebook({"cells": [{"outputs": [{"data": {MIME: stored}}]}]})] == claims.claims


def test_glue_stores_python_numbers_for_the_prose(monkeypatch):
    glued = []
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display: glued.append((name, value, display)))
    glue("x", np.float32(0.5))
    glue("n", torch.tensor(12))
    glue("verdict", "constant")
    assert glued == [("x", 0.5, False), ("n", 12, False), ("verdict", "constant", False)]
    assert type(glued[0][1]) is float and type(glued[1][1]) is int
    with pytest.raises(TypeError, match="only numbers and strings"):
        glue("table", [1, 2])


def _notebook(path, claims: list[dict] | None):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("claims.table()")
    if claims is not None:
        cell.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "...", MIME: claims})]
    nb.cells = [cell]
    nbformat.write(nb, path)
    return path


def _claim(name, holds):
    return {"name": name, "value": 0.5, "op": ">=", "threshold": 0.4, "n": 3, "over": "seeds", "holds": holds}


def test_cli_prints_the_stored_claims_and_exits_by_outcome(tmp_path, capsys):
    good = _notebook(tmp_path / "good.ipynb", [_claim("a", True), _claim("b", True)])
    assert main(["claims", str(good)]) == 0
    out = capsys.readouterr().out
    assert "holds  a" in out and "good: 2 of 2 claims hold" in out
    bad = _notebook(tmp_path / "bad.ipynb", [_claim("a", True), _claim("b", False)])
    assert main(["claims", str(bad)]) == 1
    assert "FAILS  b" in capsys.readouterr().out
    empty = _notebook(tmp_path / "empty.ipynb", None)
    assert main(["claims", str(empty)]) == 1
    assert "stores no claims table" in capsys.readouterr().err
    assert main(["claims", "no_such_chapter"]) == 2
    assert "unknown chapter" in capsys.readouterr().err


@pytest.mark.parametrize("chapter", list(ch.chapters()))
def test_every_stored_chapter_ends_with_a_claims_table_that_holds(chapter):
    claims = read_notebook(ch.chapters()[chapter])
    assert claims, f"{chapter} stores no claims table"
    assert all(c["holds"] for c in claims)
    nb = nbformat.read(ch.chapters()[chapter], as_version=4)
    last_code = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert last_code.source.strip() == "claims.table()"


def test_a_chapter_whose_claim_fails_fails_with_its_name(tmp_path, monkeypatch):
    """A real chapter run (papermill, through the command line) stops at the failing claim."""
    book = tmp_path / "book"
    write_chapter(book / "tiny.ipynb", "tol = 0.5  # choice: the claim's threshold (any validated name)",
                  "import identlib as il\nclaims = il.Claims()\n"
                  "claims.check('tiny claim', 0.7, '>=', tol, n=1, over='networks')\nclaims.table()")
    env = {**__import__("os").environ, "IDENTLIB_BOOK_DIR": str(book)}
    ok = subprocess.run([sys.executable, "-m", "identlib", "run", "tiny", "--no-progress", "-o",
                         str(tmp_path / "ok.ipynb")], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert main(["claims", str(tmp_path / "ok.ipynb")]) == 0
    bad = subprocess.run([sys.executable, "-m", "identlib", "run", "tiny", "--no-progress", "-p", "tol",
                          "0.9", "-o", str(tmp_path / "bad.ipynb")], env=env, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "claim 'tiny claim' fails: 0.7 is not >= 0.9 (1 networks)" in bad.stderr


def test_a_claim_reports_instead_of_raising_outside_the_chapters_settings(capsys):
    claims = Claims(strict=False)
    c = claims.check("deep memorizes", 0.41, ">=", 0.9, n=3)
    assert not c.holds
    assert "fails: 0.41 is not >= 0.9 (3 seeds) (reported" in capsys.readouterr().out


def test_claims_are_strict_at_the_defaults_and_profiles_only(tmp_path, monkeypatch):
    book = tmp_path / "book"
    (book / "profiles" / "tiny").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("steps = 3  # choice: steps\ndepths = [1, 2]  # choice: sweep [list of depth]")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params]
    nbformat.write(nb, book / "tiny.ipynb")
    (book / "profiles" / "tiny" / "big.yaml").write_text("depths: [1, 2, 6]\n")
    monkeypatch.setenv("IDENTLIB_BOOK_DIR", str(book))
    monkeypatch.delenv("IDENTLIB_CLAIMS", raising=False)

    def strict(**values):
        namespace = {"steps": 3, "depths": [1, 2]} | values
        return ch.chapter("tiny", namespace)[2].strict

    assert strict() and strict(depths="1, 2") and strict(depths=[1, 2, 6])
    assert not strict(depths=[1, 6]) and not strict(steps=4)
    monkeypatch.setenv("IDENTLIB_CLAIMS", "strict")
    assert strict(steps=4)
    monkeypatch.setenv("IDENTLIB_CLAIMS", "report")
    assert not strict()


def test_a_claim_whose_value_is_not_finite_reads_back_as_a_number(capsys):
    """Jupyter stores a non-finite float as a string; the claims table reads it back as a float
    and `identlib claims` prints it."""
    stored = {"name": "first depth of the '7'", "value": "inf", "op": "<=", "threshold": 4, "n": 5,
              "over": "seeds", "holds": False}
    nb = {"cells": [{"outputs": [{"data": {MIME: [stored]}}]}]}
    (claim,) = map(lambda c: Claim(**c), read_notebook(nb))
    assert claim.value == float("inf") and not claim.holds
    assert f"{claim.value:>8.3g}".strip() == "inf"
