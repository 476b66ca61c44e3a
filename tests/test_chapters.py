"""Chapters as a public interface: parameters, profiles, validation, the command line, and every
chapter re-executed by papermill with non-default parameters."""
from __future__ import annotations

import os
import re

import nbformat
import papermill
import pytest

from identlib import chapters as ch
from identlib.cli import main
from identlib.config import ConfigError

CHAPTERS = list(ch.chapters())


def outputs(path) -> str:
    """All text a notebook printed or displayed, concatenated."""
    nb = nbformat.read(path, as_version=4)
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def write_chapter(path: Path, parameters: str, *cells: str) -> Path:
    """A chapter notebook at ``path``: a ``parameters`` cell with ``parameters``, then code cells."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(c) for c in cells)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_book_has_the_spine_chapters():
    assert {"intro", "linear_fcn"} <= set(CHAPTERS)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_stored_outputs_carry_no_warnings(chapter):
    """A warning in a stored output is a fact about the machine that executed the chapter; nbval
    would ask every other machine to print it too."""
    nb = nbformat.read(ch.chapters()[chapter], as_version=4)
    stderr = [o.text for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not [t for t in stderr if "Warning" in t], stderr


def test_a_notebook_without_cell_ids_is_read_without_a_warning(tmp_path, monkeypatch):
    """Chapters read the book's notebooks (in the kernel, where a warning would land in the output
    of the cell that asked); one written without cell ids must not make them warn."""
    import json
    import warnings

    book = tmp_path / "book"
    write_chapter(book / "mini.ipynb", "n = 1  # choice: one")
    nb = json.loads((book / "mini.ipynb").read_text())
    for cell in nb["cells"]:
        cell.pop("id", None)
    (book / "mini.ipynb").write_text(json.dumps(nb))
    monkeypatch.setenv("IDENTLIB_BOOK_DIR", str(book))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(ch.chapters()) == ["mini"]
        assert ch.after("mini") == []


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_parameter_is_documented_as_paper_or_choice(chapter):
    params = ch.parameters(chapter)
    assert params
    for name, p in params.items():
        assert re.match(r"(paper|choice)\b", p["help"]), f"{chapter}.{name}: {p['help']!r}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_defaults_and_every_profile_validate(chapter):
    assert ch.resolve(chapter) == {}
    for profile in ch.profiles(chapter):
        overrides = ch.resolve(chapter, profile=profile)
        assert overrides == ch.load_profile(chapter, profile)


def test_unknown_parameter_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown parameter 'depth' .*did you mean 'depths'"):
        ch.resolve("linear_fcn", {"depth": 0})


@pytest.mark.parametrize("overrides, message", [
    ({"depths": [0]}, "depths: depth must be an integer >= 1 (got 0)"),
    ({"depths": "[1, -2]"}, "depths: depth must be an integer >= 1 (got -2)"),
    ({"lr": -1.0}, "lr must be > 0"),
    ({"lr": "fast"}, "lr must be a number"),
    ({"init": "zeros"}, "init must be one of"),
    ({"steps": 2.5}, "steps must be an integer"),
    ({"rhos": [0.5, 1.5]}, "rhos: rhos must be a number in [0, 1] (got 1.5)"),
    ({"n_probes": 0}, "n_probes must be an integer >= 1"),
])
def test_invalid_values_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        ch.resolve("linear_fcn", overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_chapter_and_profile():
    with pytest.raises(ConfigError, match="unknown chapter 'nope'"):
        ch.resolve("nope")
    with pytest.raises(ConfigError, match="no profile 'huge' for chapter linear_fcn; profiles: paper"):
        ch.resolve("linear_fcn", profile="huge")


def test_cli_refuses_bad_parameters_before_running(capsys, monkeypatch):
    monkeypatch.setattr(ch, "execute", lambda *a, **k: pytest.fail("must not execute"))
    assert main(["run", "linear_fcn", "-p", "depth", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("identlib: unknown parameter 'depth'") and "\n" not in err
    assert main(["run", "linear_fcn", "-p", "depths", "[0]"]) == 2
    assert capsys.readouterr().err.strip() == "identlib: depths: depth must be an integer >= 1 (got 0)"


def test_cli_check_params_and_chapters(capsys):
    assert main(["run", "linear_fcn", "-p", "lr", "1e-4", "-p", "depths", "[1, 3]", "--check"]) == 0
    assert "{'lr': 0.0001, 'depths': [1, 3]}" in capsys.readouterr().out
    assert main(["run", "linear_fcn", "--profile", "paper", "--check"]) == 0
    assert main(["params", "linear_fcn"]) == 0
    assert "depths = [1, 2, 6]  # paper" in capsys.readouterr().out
    assert main(["chapters"]) == 0
    assert "linear_fcn  (profiles: paper, xavier)" in capsys.readouterr().out


def test_cli_train_scores_one_config(capsys):
    assert main(["train", "-p", "depth", "1", "-p", "lr", "1e-3", "-p", "loss_reduction", "sum",
                 "-p", "steps", "100"]) == 0
    out = capsys.readouterr().out
    assert "corr_identity" in out and "ellipse" in out
    assert main(["train", "-p", "depth", "0"]) == 2
    assert "depth must be an integer >= 1 (got 0)" in capsys.readouterr().err
    assert main(["train", "-p", "wdith", "3"]) == 2
    assert "unknown config field(s): wdith" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "identlib", "run", "linear_fcn", "-p", "depths", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "identlib: depths: depth must be an integer >= 1 (got 0)"


def test_refresh_keeps_the_chapter_when_execution_fails(tmp_path, monkeypatch):
    book = tmp_path / "book"
    book.mkdir()
    src = ch.chapters()["intro"]
    (book / "intro.ipynb").write_bytes(src.read_bytes())
    monkeypatch.setenv("IDENTLIB_BOOK_DIR", str(book))

    def boom(chapter, output, *a, **k):
        open(output, "w").write("half-written")
        raise RuntimeError("kernel died")

    monkeypatch.setattr(ch, "execute", boom)
    with pytest.raises(RuntimeError):
        ch.refresh("intro")
    assert (book / "intro.ipynb").read_bytes() == src.read_bytes()
    assert sorted(p.name for p in book.iterdir()) == ["intro.ipynb"]


# --- chapters side by side ------------------------------------------------------------------------

def _stamp_command(folder, seconds: dict, fail=()):
    """A fake chapter: a process that records when it started and ended, sleeps, and may fail."""
    import sys

    def command(name):
        code = (f"import time, pathlib, sys; p = pathlib.Path({str(folder)!r}); "
                f"(p / '{name}.start').write_text(repr(time.time())); time.sleep({seconds.get(name, 0.1)}); "
                f"(p / '{name}.end').write_text(repr(time.time())); "
                + (f"sys.stderr.write('Traceback\\nboom in {name}\\n'); sys.exit(3)" if name in fail else "pass"))
        return [sys.executable, "-c", code]
    return command


def _when(folder, name, event):
    return float((folder / f"{name}.{event}").read_text())


def test_run_parallel_runs_jobs_at_a_time_and_waits_for_a_chapters_prerequisites(tmp_path):
    command = _stamp_command(tmp_path, {"a": 1.5, "b": 0.3, "c": 0.3})
    times = ch.run_parallel(["a", "b", "c"], command, jobs=2, needs={"c": ["a"]}, log=lambda t: None)
    assert set(times) == {"a", "b", "c"} and all(t > 0 for t in times.values())
    assert _when(tmp_path, "b", "start") < _when(tmp_path, "a", "end")        # a and b side by side
    assert _when(tmp_path, "c", "start") >= _when(tmp_path, "a", "end")       # c waited for a
    assert list(times)[-1] == "c"


def test_run_parallel_with_one_job_runs_in_order(tmp_path):
    command = _stamp_command(tmp_path, {"a": 0.2, "b": 0.2})
    ch.run_parallel(["a", "b"], command, jobs=1, log=lambda t: None)
    assert _when(tmp_path, "b", "start") >= _when(tmp_path, "a", "end")


def test_a_failing_chapter_stops_no_other_and_is_named_at_the_end(tmp_path):
    command = _stamp_command(tmp_path, {}, fail={"b"})
    with pytest.raises(ch.ChapterFailed) as err:
        ch.run_parallel(["a", "b", "c"], command, jobs=2, needs={"c": ["b"]}, log=lambda t: None)
    assert err.value.failed == {"b": "Traceback | boom in b"}
    assert set(err.value.times) == {"a", "c"}                  # c still ran: it trains what it needs
    assert "boom in b" in str(err.value) and "stored outputs are unchanged" in str(err.value)


def test_run_parallel_refuses_a_cycle_and_zero_jobs(tmp_path):
    command = _stamp_command(tmp_path, {})
    with pytest.raises(ValueError, match="wait on each other: a, b"):
        ch.run_parallel(["a", "b"], command, jobs=2, needs={"a": ["b"], "b": ["a"]}, log=lambda t: None)
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        ch.run_parallel(["a"], command, jobs=0)


def test_chapters_that_load_other_chapters_networks_wait_for_them():
    assert ch.after("layers") == ["deep_cnn"]            # its 7-, 14- and 20-layer networks
    assert ch.after("nonlinear_fcn") == ["linear_fcn"]   # Fig. 2's linear rows
    for name in CHAPTERS:
        assert set(ch.after(name)) <= set(CHAPTERS) - {name}


def test_refresh_all_stores_the_chapters_that_succeed_and_keeps_a_failing_one(tmp_path, monkeypatch):
    book = tmp_path / "book"
    book.mkdir()
    nb = nbformat.read(ch.chapters()["intro"], as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, book / "intro.ipynb")                           # intro without its outputs
    nb.cells.append(nbformat.v4.new_code_cell("raise RuntimeError('boom: this chapter fails')"))
    nbformat.write(nb, book / "broken.ipynb")
    broken = (book / "broken.ipynb").read_bytes()
    monkeypatch.setenv("IDENTLIB_BOOK_DIR", str(book))
    with pytest.raises(ch.ChapterFailed) as err:
        ch.refresh_all(jobs=2)
    assert list(err.value.failed) == ["broken"] and "boom: this chapter fails" in str(err.value)
    assert (book / "broken.ipynb").read_bytes() == broken
    assert "train_index=15" in outputs(book / "intro.ipynb")   # executed, stored
    assert sorted(p.name for p in book.iterdir()) == [".broken.failed.ipynb", "broken.ipynb", "intro.ipynb"]   # the failed run kept aside


def test_cli_refresh_refuses_zero_jobs_and_unknown_chapters(capsys):
    assert main(["refresh", "--jobs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "identlib: --jobs must be >= 1 (got 0)"
    assert main(["refresh", "--jobs", "2", "linear"]) == 2
    assert "unknown chapter 'linear'" in capsys.readouterr().err


def test_parameters_validate_without_torch():
    """The notebook runner validates every chapter's parameters without importing torch (it is
    lazy), and the layer chapter's rules do not depend on importing identlib.layers first."""
    import subprocess
    import sys

    code = ("import sys\nfrom identlib import chapters as ch\n"
            "for name in ch.chapters(): ch.resolve(name, {})\n"
            "try:\n    ch.resolve('layers', {'summary': 'max'})\nexcept Exception as err:\n    print(err)\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines() == ["summary must be one of pc, mean (got 'max')", "False"]


def test_lazy_package_keeps_its_names():
    import identlib as il
    import identlib.experiments  # noqa: F401  (imports the submodule identlib.train)

    from identlib.train import train

    assert il.train is train                             # the function, not the submodule
    assert all(hasattr(il, name) for name in il.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        il.nope


# --- every chapter executed by papermill with non-default parameters ----------------------------

def test_intro_with_another_training_image(tmp_path):
    out = tmp_path / "intro.ipynb"
    ch.execute("intro", out, {"train_index": 0}, progress=False)     # MNIST training image 0, a "5"
    text = outputs(out)
    assert "train_index=0" in text
    assert outputs(ch.chapters()["intro"]) != text


def test_linear_fcn_with_other_depths_changes_the_result(tmp_path):
    out = tmp_path / "linear.ipynb"
    params = {"depths": [1, 3], "rhos": [0.0, 1.0], "n_probes": 3}
    ch.execute("linear_fcn", out, params, progress=False)
    text = outputs(out)
    assert "3-layer: correlation with the input" in text
    assert "6-layer" not in text
    assert "max |W_trained - W_inf| within 1e-9 for every seed: True" in text   # Theorem 1 still holds
    stored = outputs(ch.chapters()["linear_fcn"])
    assert "6-layer: correlation with the input" in stored and stored != text


def test_papermill_alone_fails_in_the_setup_cell_before_training(tmp_path):
    out = tmp_path / "bad.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(ch.chapters()["linear_fcn"]), str(out),
                                   parameters={"depths": "[0]"}, progress_bar=False,
                                   cwd=str(ch.book_dir()))
    assert "depths: depth must be an integer >= 1 (got 0)" in str(err.value)
    nb = nbformat.read(out, as_version=4)
    failed = [c for c in nb.cells if any(o.output_type == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1 and "il.chapter(" in failed[0].source   # the setup cell, not training


def test_shallow_cnn_with_small_networks_keeps_the_theory(tmp_path):
    out = tmp_path / "shallow.ipynb"
    params = {"kernel_sizes": [3, 29], "depths": [1, 2], "activations": ["relu"], "channels": 4,
              "steps": 50}
    ch.execute("shallow_cnn", out, params, progress=False)
    text = outputs(out)
    assert "full rank k² up to k = 3; first rank-deficient k = 29" in text
    assert "max |w_trained - w∞| within 1e-6: True" in text                   # the closed form
    assert "2-layer relu: lowest correlation with the input" in text
    assert "3-layer" not in text and "linear:" not in text
    stored = outputs(ch.chapters()["shallow_cnn"])
    assert "5-layer relu: lowest correlation with the input" in stored and stored != text


def test_relative_cache_and_data_folders_are_made_absolute_before_a_kernel_starts(tmp_path, monkeypatch):
    """A kernel runs in book/: a relative IDENTLIB_CACHE_DIR must still mean the caller's folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IDENTLIB_CACHE_DIR", ".cache/identlib")
    monkeypatch.setenv("IDENTLIB_DATA_DIR", str(tmp_path / "data"))
    ch.absolute_env_paths()
    assert os.environ["IDENTLIB_CACHE_DIR"] == str(tmp_path / ".cache" / "identlib")
    assert os.environ["IDENTLIB_DATA_DIR"] == str(tmp_path / "data")


# --- the chapter contract -------------------------------------------------------------------------

def _mini_book(tmp_path):
    """A one-chapter book whose chapter adds a sweep parameter no other chapter has."""
    book = tmp_path / "book"
    write_chapter(
        book / "mini.ipynb",
        "steps = 3  # choice: training steps\n"
        "colour_depths = [1, 2]  # choice: a new sweep of the depth [list of depth]\n"
        "n_shown = 2  # choice: how many results to print [int ≥ 1]",
        'import identlib as il\nbase, p, claims = il.chapter("mini", globals(), model="fcn", width=8)',
        "runs = il.run_all(il.grid(base, depth=p.colour_depths))\n"
        "print([r.config.depth for r in runs][:p.n_shown])\n"
        "claims.check('every network trained', len(runs), '==', len(p.colour_depths), n=len(runs),\n"
        "             over='networks')\n"
        "claims.table()")
    return book


def test_a_new_sweep_parameter_needs_only_its_chapter(tmp_path, monkeypatch):
    """The parameter's kind is declared in its comment: the command line and the notebook both
    validate it from there, with nothing added to the package."""
    book = _mini_book(tmp_path)
    env = {**os.environ, "IDENTLIB_BOOK_DIR": str(book)}
    import subprocess
    import sys

    def identlib(*args):
        return subprocess.run([sys.executable, "-m", "identlib", *args], env=env, capture_output=True, text=True)

    ok = identlib("run", "mini", "--no-progress", "-p", "colour_depths", "[1, 3]", "-o", str(tmp_path / "ok.ipynb"))
    assert ok.returncode == 0, ok.stderr
    assert "[1, 3]" in outputs(tmp_path / "ok.ipynb")
    assert identlib("claims", str(tmp_path / "ok.ipynb")).returncode == 0
    bad = identlib("run", "mini", "-p", "colour_depths", "[1, 0]")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "identlib: colour_depths: depth must be an integer >= 1 (got 0)"
    params = identlib("params", "mini")
    assert "colour_depths = [1, 2]  # choice: a new sweep of the depth [list of depth]" in params.stdout
    # papermill alone passes any value: the chapter's first call refuses it
    monkeypatch.setenv("IDENTLIB_BOOK_DIR", str(book))
    with pytest.raises(papermill.PapermillExecutionError, match="colour_depths: depth must be an integer"):
        papermill.execute_notebook(str(book / "mini.ipynb"), str(tmp_path / "raw.ipynb"),
                                   parameters={"colour_depths": "[0]"}, cwd=str(book), progress_bar=False)


def test_a_parameter_without_a_kind_is_refused(tmp_path, monkeypatch):
    book = _mini_book(tmp_path)
    nb = nbformat.read(book / "mini.ipynb", as_version=4)
    nb.cells[0].source = nb.cells[0].source.replace(" [int ≥ 1]", "")
    nbformat.write(nb, book / "mini.ipynb")
    monkeypatch.setenv("IDENTLIB_BOOK_DIR", str(book))
    with pytest.raises(ConfigError, match="parameter 'n_shown' declares no kind"):
        ch.parameters("mini")


def test_a_parameters_comment_may_go_on_below_it(tmp_path, monkeypatch):
    """So that a parameters cell fits the page: comment-only lines right below a parameter
    continue its comment, and its kind may end the last of them."""
    book = tmp_path / "book"
    write_chapter(book / "wrapped.ipynb",
                  'n_shown = 3  # choice: how many images\n'
                  '             # are shown [int ≥ 1]\n'
                  '\n'
                  '# a note on the next parameter, not a continuation\n'
                  'depths = [1, 2]  # choice: depths [list of depth]\n')
    monkeypatch.setenv("IDENTLIB_BOOK_DIR", str(book))
    params = ch.parameters("wrapped")
    assert params["n_shown"]["help"] == "choice: how many images are shown [int ≥ 1]"
    assert params["depths"]["help"] == "choice: depths [list of depth]"
    assert ch.validate("wrapped", {"n_shown": 2, "depths": [3]}) == {"n_shown": 2, "depths": [3]}
    with pytest.raises(ConfigError, match="n_shown must be an integer >= 1"):
        ch.validate("wrapped", {"n_shown": 0})


def _threads_command(folder):
    import sys

    def command(name):
        code = (f"import os, pathlib; pathlib.Path({str(folder)!r}, '{name}.env').write_text("
                "os.environ['IDENTLIB_THREADS'] + ' ' + os.environ.get('IDENTLIB_WORKERS', '-'))")
        return [sys.executable, "-c", code]
    return command


def test_chapters_side_by_side_share_the_threads_and_one_alone_keeps_them(tmp_path, monkeypatch):
    monkeypatch.setenv("IDENTLIB_THREADS", "4")
    monkeypatch.delenv("IDENTLIB_WORKERS", raising=False)
    ch.run_parallel(["a", "b"], _threads_command(tmp_path), jobs=2, log=lambda t: None)
    assert (tmp_path / "a.env").read_text() == "2 4"      # half the threads each; training as alone
    ch.run_parallel(["c"], _threads_command(tmp_path), jobs=2, log=lambda t: None)
    assert (tmp_path / "c.env").read_text() == "4 -"
