"""Chapters as parameterized notebooks: their parameters, profiles, validation and execution.

A chapter is ``book/<name>.ipynb`` with a cell tagged ``parameters`` (papermill's convention).
A chapter that loads networks another chapter trains names it in its notebook metadata
(``"identlib": {"after": ["deep_cnn"]}``); chapters executed in parallel (:func:`refresh_all`)
start only after the chapters they name have finished, so that nothing is trained twice.
A parameter named after a :class:`~identlib.config.RunConfig` field follows that field's rule; every
other parameter declares its :class:`~identlib.config.Kind` at the end of its comment in the
parameters cell, for example ``study_depths = [5, 20]  # choice: depths of the study [list of depth]``.
The same declarations validate a notebook run (:func:`chapter`, the first call of every chapter), a
YAML profile and the command line. A profile is ``book/profiles/<chapter>/<profile>.yaml`` holding
only overrides.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import re

from .config import FIELDS, ConfigError, Kind

__all__ = ["book_dir", "chapters", "parameters", "profiles", "load_profile", "validate", "resolve", "chapter", "recipe",
           "execute", "refresh", "after", "run_parallel", "refresh_all", "ChapterFailed", "ChapterError"]

_KIND = re.compile(r"\s*\[([^\]]+)\]\s*$")


def book_dir() -> Path:
    """``$IDENTLIB_BOOK_DIR``, else the ``book/`` folder beside the package (a source checkout)."""
    env = os.environ.get("IDENTLIB_BOOK_DIR")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "book"
    if not path.is_dir():
        raise FileNotFoundError(f"no book folder at {path}; set IDENTLIB_BOOK_DIR")
    return path


def read_notebook(path: Path):
    """A notebook as nbformat's v4 node, read without the validation warnings (a cell without an
    id, from an older writer) that would otherwise land in the output of the cell that asked."""
    import warnings

    import nbformat

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nbformat.read(path, as_version=4)


def chapters() -> dict[str, Path]:
    """Chapter name -> notebook path, for every notebook in the book with a parameters cell."""
    out = {}
    for nb_path in sorted(p for p in book_dir().glob("*.ipynb") if not p.name.startswith(".")):
        nb = read_notebook(nb_path)
        if any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
            out[nb_path.stem] = nb_path
    return out


def _chapter_path(chapter: str) -> Path:
    here = Path.cwd() / f"{chapter}.ipynb"          # a chapter run from its own folder (papermill's cwd)
    try:
        known = chapters()
    except FileNotFoundError:
        known = {}
    if chapter not in known:
        if here.exists():
            return here
        raise ConfigError(f"unknown chapter {chapter!r}; chapters: {', '.join(known)}")
    return known[chapter]


def _continued_help(path: Path) -> dict[str, str]:
    """name -> the comment lines that continue a parameter's trailing comment on the lines below
    it (comment-only lines, which papermill skips), so that a parameters cell fits the page::

        channels = 16  # paper: 128; choice: 16, so that the chapter runs in minutes
                       # (paper profile: 128)
    """
    nb = read_notebook(path)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    out, name = {}, None
    for line in cell.source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and name is not None:
            out[name] = (out.get(name, "") + " " + stripped.lstrip("#").strip()).strip()
        else:
            m = re.match(r"(\w+)\s*=", line)
            name = m.group(1) if m else None
    return out


def parameters(chapter: str) -> dict[str, dict]:
    """name -> {"default": value, "help": its comment, "kind": its :class:`Kind`} of a chapter's
    parameters cell. The comment trails the assignment and may go on in comment lines below it.
    A parameter that is not a config field must declare its kind, at the end of its comment."""
    import papermill

    out = {}
    path = _chapter_path(chapter)
    more = _continued_help(path)
    for name, p in papermill.inspect_notebook(str(path)).items():
        text = (p["help"].strip() + " " + more.get(name, "")).strip()
        m = _KIND.search(text)
        if m:
            kind = Kind(m.group(1))
        elif name in FIELDS:
            kind = Kind(name)
        else:
            raise ConfigError(f"{chapter}: parameter {name!r} declares no kind; end its comment with one, "
                              "such as [list of depth] or [int ≥ 1]")
        out[name] = {"default": ast.literal_eval(p["default"]), "help": text, "kind": kind}
    return out


def validate(chapter: str, values: dict, known: dict | None = None) -> dict:
    """``values`` (a subset of the chapter's parameters) checked by their kinds; lists parsed."""
    known = known or parameters(chapter)
    return {name: known[name]["kind"](name, value) for name, value in values.items()}


def profiles(chapter: str) -> list[str]:
    folder = book_dir() / "profiles" / chapter
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_profile(chapter: str, profile: str) -> dict:
    """Overrides from a named profile of the chapter, or from a YAML file path."""
    import yaml

    path = Path(profile)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = book_dir() / "profiles" / chapter / f"{profile}.yaml"
    if not path.exists():
        raise ConfigError(f"no profile {profile!r} for chapter {chapter}; profiles: "
                          f"{', '.join(profiles(chapter)) or 'none'}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"profile {path.name} must be a mapping of parameter: value")
    return data


def _same_kind(name: str, value, default):
    """Coerce ``value`` to the kind of the default where that is lossless; refuse otherwise."""
    if isinstance(default, bool):
        if isinstance(value, str) and value in ("True", "False", "true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False (got {value!r})")
    elif isinstance(default, float):
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, float):
            raise ConfigError(f"{name} must be a number (got {value!r})")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer (got {value!r})")
    elif isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string (got {value!r})")
    return value


def resolve(chapter: str, overrides: dict | None = None, profile: str | None = None) -> dict:
    """The validated overrides for a run of ``chapter``: the profile's, then ``overrides``.

    Unknown names and invalid values raise :class:`~identlib.config.ConfigError` with a one-line
    message, before anything is executed.
    """
    known = parameters(chapter)
    merged = dict(load_profile(chapter, profile)) if profile else {}
    merged.update(overrides or {})
    for name in merged:
        if name not in known:
            import difflib

            near = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"unknown parameter {name!r} for chapter {chapter}{hint}; "
                              f"parameters: {', '.join(known)}")
    merged = {k: _same_kind(k, v, known[k]["default"]) for k, v in merged.items()}
    full = {k: v["default"] for k, v in known.items()} | merged
    _base(validate(chapter, full, known), {})     # the whole set, so cross-checks see the final values
    return validate(chapter, merged, known)


def _base(values: dict, fixed: dict):
    from .config import RunConfig

    return RunConfig(**fixed, **{k: v for k, v in values.items() if k in FIELDS})


def chapter(name: str, namespace: dict, *, require: str | None = None, like: str | None = None,
            **fixed):
    """The first call of a chapter: validate its parameters (read from ``namespace``, the
    notebook's globals, by the names of its parameters cell), fix the threads and check the
    package version (:func:`identlib.setup`), and print both.

    ``require`` is the identlib version the chapter was written for. Returns ``(base, p, claims)``: the base :class:`~identlib.config.RunConfig` from the parameters
    that are config fields plus ``fixed`` (e.g. ``model="cnn"``); every parameter, validated and
    with its lists parsed, as attributes of ``p``; and the chapter's :class:`~identlib.claims.Claims`.
    With ``like``, another chapter's name, the base is that chapter's :func:`recipe` instead, with
    this chapter's config-field parameters and ``fixed`` on top: a chapter that studies another
    chapter's networks trains (or loads) exactly those.
    """
    import types

    from .claims import Claims
    from .runtime import setup

    known = parameters(name)
    missing = [k for k in known if k not in namespace]
    if missing:
        raise ConfigError(f"{name}: run the parameters cell first (missing {', '.join(missing)})")
    values = validate(name, {k: namespace[k] for k in known}, known)
    if like is None:
        base = _base(values, fixed)
    else:
        base = recipe(like).replace(**fixed, **{k: v for k, v in values.items() if k in FIELDS})
    print(setup(require=require))
    print(base)
    return base, types.SimpleNamespace(**values), Claims(strict=_own_settings(name, values, known))


def recipe(name: str, **fixed):
    """The base :class:`~identlib.config.RunConfig` of chapter ``name`` at its default parameters
    (those that are config fields) plus ``fixed``, as that chapter's :func:`chapter` call makes
    it: how a chapter trains, or loads from the results cache, another chapter's networks.

    >>> recipe("deep_cnn", model="cnn").channels
    16
    """
    known = parameters(name)
    values = validate(name, {k: v["default"] for k, v in known.items()}, known)
    return _base(values, fixed)


def _own_settings(name: str, values: dict, known: dict) -> bool:
    """Whether ``values`` are the chapter's defaults or one of its named profiles: the settings its
    claims are made for (``$IDENTLIB_CLAIMS`` = ``strict`` or ``report`` overrides)."""
    mode = os.environ.get("IDENTLIB_CLAIMS", "")
    if mode in ("strict", "report"):
        return mode == "strict"
    defaults = validate(name, {k: v["default"] for k, v in known.items()}, known)
    changed = {k: v for k, v in values.items() if v != defaults[k]}
    if not changed:
        return True
    for profile in profiles(name):
        try:
            overrides = validate(name, load_profile(name, profile), known)
        except ConfigError:
            continue
        if changed == {k: v for k, v in overrides.items() if v != defaults[k]}:
            return True
    return False


def execute(chapter: str, output: str | Path, overrides: dict | None = None,
            profile: str | None = None, progress: bool = True, leave_out: str | None = None) -> Path:
    """Validate, then execute the chapter with papermill into ``output``; the cells tagged
    ``leave_out``, if given, are left out before it runs (they neither run nor check claims)."""
    import papermill

    params = resolve(chapter, overrides, profile)
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    src = _chapter_path(chapter)
    notebook = str(src)
    if leave_out:
        notebook = read_notebook(src)
        notebook.cells = [c for c in notebook.cells if leave_out not in c.metadata.get("tags", [])]
    absolute_env_paths()
    try:
        papermill.execute_notebook(notebook, str(output), parameters=params, cwd=str(src.parent),
                                   kernel_name="python3", progress_bar=progress)
    except papermill.PapermillExecutionError as err:
        raise ChapterError(chapter, err, output) from err
    return output


class ChapterError(RuntimeError):
    """A chapter raised while executing: its name, the cell, the error's first line, and where the
    executed notebook (with the full traceback) is."""

    def __init__(self, chapter: str, err, notebook: Path, note: str = ""):
        self.chapter, self.cell, self.ename, self.notebook = chapter, err.cell_index, err.ename, notebook
        self.evalue = next((t.strip() for t in str(err.evalue).splitlines() if t.strip()), "")
        self.error = err
        super().__init__(f"chapter {chapter} failed in cell {err.cell_index + 1}: {err.ename}: "
                         f"{self.evalue} (the traceback is in {notebook}{note})")

    def kept(self, notebook: Path, note: str) -> "ChapterError":
        """The same failure, with its executed notebook moved to ``notebook``."""
        return ChapterError(self.chapter, self.error, notebook, note)


PATH_VARIABLES = ("IDENTLIB_CACHE_DIR", "IDENTLIB_DATA_DIR")


def absolute_env_paths() -> None:
    """Make the relative folders in ``PATH_VARIABLES`` absolute, relative to this process's working
    directory. A chapter's kernel runs in book/, so ``IDENTLIB_CACHE_DIR=.cache/identlib`` would
    otherwise mean book/.cache/identlib there: a second, empty cache, and every network trained
    again."""
    for name in PATH_VARIABLES:
        value = os.environ.get(name)
        if value and not Path(value).expanduser().is_absolute():
            os.environ[name] = str(Path(value).expanduser().resolve())


def _strip_volatile(path: Path) -> None:
    """Drop papermill's timings and run metadata so a re-executed chapter differs only in outputs."""
    import nbformat

    nb = read_notebook(path)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.metadata.get("tags") == []:
            cell.metadata.pop("tags")
    nbformat.write(nb, path)


def refresh(chapter: str, progress: bool = True) -> Path:
    """Re-execute a chapter with its default parameters and store the outputs in the chapter itself.

    The run goes to a temporary file first; the chapter is replaced only if every cell succeeded,
    so a failing run never loses the outputs already stored.
    """
    import tempfile

    src = _chapter_path(chapter)
    fd, tmp = tempfile.mkstemp(dir=src.parent, prefix=f".{chapter}-", suffix=".ipynb")
    os.close(fd)
    try:
        try:
            execute(chapter, tmp, {}, progress=progress)
        except ChapterError as err:                 # keep the failed run (ignored by git and the book)
            failed = src.with_name(f".{chapter}.failed.ipynb")
            os.replace(tmp, failed)
            raise err.kept(failed, "; the chapter keeps its stored outputs") from err.error
        _strip_volatile(Path(tmp))
        os.chmod(tmp, src.stat().st_mode)          # mkstemp's files are private (0600)
        os.replace(tmp, src)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return src


class ChapterFailed(RuntimeError):
    """One or more chapters of a parallel run failed; the others finished (``times``)."""

    def __init__(self, failed: dict[str, str], times: dict[str, float]):
        self.failed, self.times = failed, times
        lines = [f"{name}: {tail}" for name, tail in failed.items()]
        super().__init__(f"{len(failed)} chapter(s) failed (their stored outputs are unchanged; the "
                         f"others finished): " + "; ".join(lines))


def after(chapter: str) -> list[str]:
    """The chapters whose networks ``chapter`` loads (its notebook metadata ``identlib.after``)."""
    nb = read_notebook(_chapter_path(chapter))
    return list(nb.metadata.get("identlib", {}).get("after", []))


def run_parallel(names: list[str], command, jobs: int = 2, needs: dict | None = None,
                 log=None) -> dict[str, float]:
    """Run ``command(name)`` (an argv list, one subprocess per chapter) for every chapter, ``jobs``
    at a time, in the order given except that a chapter waits for the chapters ``needs[name]``
    names (those in ``names``). Returns each chapter's wall time in seconds, in the order the
    chapters finished. A failing chapter does not stop the others: once all have run,
    :class:`ChapterFailed` names the failures with the end of their error output. A chapter whose
    prerequisite failed still runs (it trains what it needs itself).

    >>> import sys
    >>> order = run_parallel(["b", "a"], lambda n: [sys.executable, "-c", "pass"], jobs=2, needs={"b": ["a"]})
    >>> list(order)
    ['a', 'b']
    """
    import subprocess
    import sys
    import tempfile
    import time

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1 (got {jobs})")
    needs = {n: [m for m in (needs or {}).get(n, []) if m in names and m != n] for n in names}
    waiting, running, done, failed = list(names), {}, {}, {}
    from .runtime import side_by_side

    env = side_by_side(min(jobs, len(names)))          # one chapter alone keeps every thread
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    try:
        while waiting or running:
            ready = [n for n in waiting if all(m in done or m in failed for m in needs[n])]
            while ready and len(running) < jobs:
                name = ready.pop(0)
                waiting.remove(name)
                err = tempfile.TemporaryFile()
                log(f"{name}: started")
                running[name] = (subprocess.Popen(command(name), stdout=subprocess.DEVNULL, stderr=err,
                                                  env=env), err, time.perf_counter())
            if not running:        # only chapters waiting on each other: a cycle in their metadata
                raise ValueError(f"chapters wait on each other: {', '.join(waiting)}")
            time.sleep(0.2)
            for name, (proc, err, start) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                elapsed = time.perf_counter() - start
                err.seek(0)
                tail = err.read().decode(errors="replace").strip().splitlines()[-5:]
                err.close()
                if proc.returncode == 0:
                    done[name] = elapsed
                    log(f"{name}: done in {elapsed:.0f} s")
                else:
                    failed[name] = " | ".join(tail) or f"exit status {proc.returncode}"
                    log(f"{name}: FAILED (exit status {proc.returncode}): {failed[name]}")
    finally:
        for proc, err, _ in running.values():      # interrupted: stop the chapters still running
            proc.terminate()
            proc.wait()
            err.close()
    if failed:
        raise ChapterFailed(failed, done)
    return done


def refresh_all(names: list[str] | None = None, jobs: int = 2) -> dict[str, float]:
    """:func:`refresh` every chapter (default: all), ``jobs`` at a time in separate processes,
    honouring each chapter's :func:`after`. Chapters that succeed are stored even if others fail
    (then :class:`ChapterFailed` is raised at the end). Every cached network is trained alone on
    one thread, so running chapters side by side changes no stored output."""
    import sys

    names = list(names or chapters())
    for name in names:
        _chapter_path(name)                                      # unknown names fail before anything runs
    needs = {name: after(name) for name in names}
    absolute_env_paths()
    return run_parallel(names, lambda n: [sys.executable, "-m", "identlib", "refresh", "--no-progress", n],
                        jobs, needs)
