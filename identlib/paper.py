"""The chapters at the paper's scale: each chapter's ``paper`` profile, executed once and stored as
``book/paper/<chapter>.ipynb``, a page of the book's part "At the paper's scale".

:func:`store` executes a chapter with its paper profile (resuming from the results cache: an
interrupted run keeps every network it finished) and stores the executed notebook only if every
cell succeeded, as :func:`identlib.chapters.refresh` does. The stored copy is the chapter itself,
made a page of its own: its figure and exercise labels are prefixed (``fig-x`` becomes
``paper-fig-x``, so the two pages do not define one label twice), its links point back to the
book's folder, its title says the scale, and a note under the title records the run
(:func:`run_record`: date, machine, device, wall time, parameters), which the notebook's metadata
also holds (``identlib.run``).
A chapter may have further stored runs beside it, profiles named ``paper-<what>`` (larger than the
chapter's defaults, which CI executes, where the paper's own scale would take days), stored as
``book/paper/<chapter>-<what>.ipynb`` in the same part (:func:`pages`).
CI never executes these notebooks; it checks their stored claims and renders them.

:func:`index` writes the part's first page, ``book/paper/index.md``: what is stored, and for the
chapters whose paper profile has not run, the profile's own account of its expected cost.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from . import chapters as ch
from .cache import stored_since
from .config import ConfigError

__all__ = ["PROFILE", "folder", "pages", "stored", "store", "resolved", "quote", "Quote", "record",
           "run_record", "paper_copy", "index", "index_text", "runs_table", "glued"]

PROFILE = "paper"
INDEX_START, INDEX_END = "<!-- stored runs: identlib.paper.index -->", "<!-- end of stored runs -->"


def folder() -> Path:
    return ch.book_dir() / "paper"


def stored() -> dict[str, Path]:
    """Chapter name -> its stored paper-scale notebook, for the chapters that have one."""
    if not folder().is_dir():
        return {}
    return {p.stem: p for p in sorted(folder().glob("*.ipynb")) if not p.name.startswith(".")}


def with_paper_profile() -> list[str]:
    """The chapters that have a paper profile, by name."""
    return [name for name in ch.chapters() if PROFILE in ch.profiles(name)]


def pages() -> dict[str, tuple[str, str]]:
    """Every page this part can store, by name: (chapter, profile). A chapter's ``paper`` profile
    is the page named after the chapter; a profile ``paper-<what>`` the page ``<chapter>-<what>``."""
    out = {}
    for name in ch.chapters():
        for profile in sorted(ch.profiles(name), key=lambda p: (p != PROFILE, p)):
            if profile == PROFILE:
                out[name] = (name, profile)
            elif profile.startswith(f"{PROFILE}-"):
                out[f"{name}-{profile[len(PROFILE) + 1:]}"] = (name, profile)
    return out


def check(name: str) -> None:
    """Refuse, with one line, a page that is not one of :func:`pages` (an unknown chapter, or a
    chapter without a paper profile)."""
    if name in pages():
        return
    ch._chapter_path(name)                                      # an unknown chapter fails first
    raise ConfigError(f"chapter {name} has no {PROFILE} profile; pages that can be stored: "
                      f"{', '.join(pages())}")


def run_record(chapter: str, params: dict, wall_seconds: float, networks: int = 0,
               trained: int = 0, profile: str = PROFILE) -> dict:
    """What the stored page says about its run: chapter, profile, parameters, date (UTC), the
    machine (:func:`identlib.runtime.platform`, with the device), the wall time, and how many of
    the networks it used this run trained (the others came from the results cache: an earlier,
    interrupted run, or another chapter)."""
    from .runtime import platform

    return {"chapter": chapter, "profile": profile, "parameters": params,
            "date": time.strftime("%Y-%m-%d", time.gmtime()), "machine": platform(),
            "wall_seconds": round(float(wall_seconds)), "networks": networks, "trained": trained,
            "claims": os.environ.get("IDENTLIB_CLAIMS") or "strict"}


def with_first_run(record: dict, stored: Path) -> dict:
    """``record`` with, under "first", the run that trained the networks this one read from the
    results cache: the earlier stored page's run (or the one it repeated) when that page had the
    same profile and parameters and trained more networks. A page executed again from a warm cache
    would otherwise say that its run took a few seconds and trained nothing."""
    if record["trained"] >= record["networks"] or not Path(stored).exists():
        return record
    before = _record(Path(stored))
    if (before.get("profile"), before.get("parameters")) != (record["profile"], record["parameters"]):
        return record
    first = before.get("first") or {"date": before.get("date"), "cpu": before.get("machine", {}).get("cpu"),
                                    "wall_seconds": before.get("wall_seconds", 0),
                                    "trained": before.get("trained", 0)}
    return {**record, "first": first} if first["trained"] > record["trained"] else record


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


NOTE_START = ":::{note} At the paper's scale"
NOTE_STARTS = (NOTE_START, ":::{note} A stored run")       # a paper profile's page; another's


def note_cell(nb):
    """The cell of a stored page's note (an nbformat notebook)."""
    return next(c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith(NOTE_STARTS))


def _note(record: dict, failed: list[str] | None = None) -> str:
    """The note under the page's title: the run, and the chapter's claims that do not hold at
    this scale (``failed``), which the page's claims table shows with their values."""
    m = record["machine"]
    profile = record.get("profile", PROFILE)
    params = ", ".join(f"`{k} = {v!r}`" for k, v in sorted(record["parameters"].items()))  # as stored
    return (f"{NOTE_STARTS[profile != PROFILE]}\n"
            f"This page is the chapter {{doc}}`../{record['chapter']}` executed with its "
            f"`{profile}` profile ({params}), on {record['date']}, on {m['cpu']} "
            f"({m['instruction_set']}, device {m['device']}, torch {m['torch'].split('+')[0]}), "
            f"in {_duration(record['wall_seconds'])} of wall time, training {record.get('trained', 0)} of "
            f"the {record.get('networks', 0)} networks it uses (the others were in the results cache). "
            f"The prose is the chapter's own, "
            f"written for its default settings; the numbers, figures, claims and verdicts are this "
            f"run's. `make paper` executes it again, resuming from the results cache."
            + _first(record) + _differs(record, failed or []) + "\n:::")


def _first(record: dict) -> str:
    first = record.get("first")
    if not first:
        return ""
    return (f" Its networks were trained by the run it repeats, on {first['date']} on {first['cpu']}: "
            f"{_duration(first['wall_seconds'])} of wall time, training {first['trained']} of them.")


def _differs(record: dict, failed: list[str]) -> str:
    if not failed:
        return " Every claim of the chapter holds at this scale."
    names = "; ".join(f"*{name}*" for name in failed)
    how = (" The chapter was executed with its claims reported instead of raised "
           "(`IDENTLIB_CLAIMS=report`), so that the whole run could be stored;"
           if record.get("claims") == "report" else "")
    return (f"{how} {len(failed)} of the chapter's claims, written for its default settings, do not "
            f"hold at this scale (the claims table at the end shows by how much): {names}.")


def failed_claims(nb) -> list[str]:
    """The names of the claims that fail in a notebook's stored claims table (a path, or a
    notebook already read)."""
    from .claims import Claim, read_notebook as read_claims

    return [c.name for c in map(lambda c: Claim(**c), read_claims(nb)) if not c.holds]


def renote(path: Path) -> Path:
    """Write a stored page's note again from its run record and its claims table (nothing is
    executed): the note of a page stored by an older identlib, or after the note's wording
    changed."""
    import nbformat

    nb = ch.read_notebook(path)
    record = nb.metadata["identlib"]["run"]
    note_cell(nb).source = _note(record, failed_claims(nb))
    nbformat.write(nb, path)
    return path


CHAPTER_ONLY = "chapter-only"


def paper_copy(nb, record: dict):
    """The executed chapter ``nb`` (an nbformat node) made the page of its paper-scale run: the
    cells tagged ``chapter-only`` left out (a chapter's comparison with its own stored page, which
    the page cannot quote), labels prefixed, links to the book's folder, the title and the run's
    note. Modifies and returns it."""
    import nbformat

    profile = record.get("profile", PROFILE)
    prefix = f"{profile}-"                          # paper-fig-x; paper-init-fig-x for paper-init
    nb.cells = [c for c in nb.cells if CHAPTER_ONLY not in c.metadata.get("tags", [])]
    labels = set()
    for cell in nb.cells:
        figure = cell.metadata.get("mystnb", {}).get("figure", {})
        if "name" in figure:
            labels.add(figure["name"])
        if cell.cell_type == "markdown":
            labels.update(re.findall(r"^\((\S+)\)=\s*$", cell.source, re.M))
            # the names of figures and the labels of exercises
            labels.update(re.findall(r"^:(?:name|label):\s*(\S+)\s*$", cell.source, re.M))
    rename = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(labels, key=len, reverse=True)))
                        + r")(?![\w-])") if labels else None
    for cell in nb.cells:
        figure = cell.metadata.get("mystnb", {}).get("figure", {})
        if "name" in figure:
            figure["name"] = f"{prefix}{figure['name']}"
        if cell.cell_type != "markdown":
            continue
        text = cell.source
        if rename is not None:
            text = rename.sub(lambda m: f"{prefix}{m.group(1)}", text)
        text = re.sub(r"\{doc\}`paper/([^`/<]+)`", r"{doc}`./\1`", text)      # a page beside it
        text = re.sub(r"\{doc\}`([^`<]*)<paper/([^>/]+)>`", r"{doc}`\1<./\2>`", text)
        text = re.sub(r"\{doc\}`([^`/<]+)`", r"{doc}`../\1`", text)
        text = re.sub(r"\{doc\}`([^`<]*)<([^>/]+)>`", r"{doc}`\1<../\2>`", text)
        text = re.sub(r"\]\((?!https?:|#|\.\./|/)([^)]+)\)", r"](../\1)", text)
        cell.source = text
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown")
    scale = "at the paper's scale" if profile == PROFILE else _profile_title(record["chapter"], profile)
    nb.cells[first].source = re.sub(r"^# (.+)$", lambda m: f"# {m.group(1)}, {scale}",
                                    nb.cells[first].source, count=1, flags=re.M)
    nb.cells.insert(first + 1, nbformat.v4.new_markdown_cell(_note(record, failed_claims(nb))))
    nb.metadata.setdefault("identlib", {})["run"] = record
    return nb


def resolved(params: dict) -> dict:
    """A profile's parameters as this machine runs them: ``precision: auto`` becomes the precision
    it computes in here (:func:`identlib.runtime.native_precision`), so that the page records it.

    >>> resolved({"channels": 128, "precision": "auto"})["precision"] in ("bf16", "float32")
    True
    """
    if params.get("precision") != "auto":
        return dict(params)
    from .runtime import native_precision

    return {**params, "precision": native_precision()}


def store(name: str, progress: bool = True) -> Path:
    """Execute the page ``name`` of :func:`pages` (a chapter with its paper profile, or with a
    profile ``paper-<what>``) and store it as ``book/paper/<name>.ipynb`` (only if every cell
    succeeded; a failed run is kept as ``book/paper/.<name>.failed.ipynb`` and the stored page, if
    any, is unchanged). Then rewrite the part's index."""
    import tempfile

    import nbformat

    check(name)
    chapter, profile = pages()[name]
    params = resolved(ch.resolve(chapter, None, profile))
    out = folder()
    out.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}-", suffix=".ipynb")
    os.close(fd)
    trace = Path(tmp).with_suffix(".trace")
    before = os.environ.get("IDENTLIB_TRACE")
    try:
        start, began = time.perf_counter(), time.time()
        os.environ["IDENTLIB_TRACE"] = str(trace)          # the kernel lists the networks it uses
        try:
            ch.execute(chapter, tmp, params, progress=progress, leave_out=CHAPTER_ONLY)
        except ch.ChapterError as err:
            failed = out / f".{name}.failed.ipynb"
            os.replace(tmp, failed)
            raise err.kept(failed, "; the stored paper-scale page is unchanged") from err.error
        finally:
            if before is None:
                os.environ.pop("IDENTLIB_TRACE", None)
            else:
                os.environ["IDENTLIB_TRACE"] = before
        wall = time.perf_counter() - start
        used = set(trace.read_text().split()) if trace.exists() else set()
        trained = len(used & stored_since(began))
        ch._strip_volatile(Path(tmp))
        record = with_first_run(run_record(chapter, params, wall, len(used), trained, profile),
                                out / f"{name}.ipynb")
        nb = paper_copy(ch.read_notebook(Path(tmp)), record)
        nbformat.write(nb, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out / f"{name}.ipynb")
    finally:
        for path in (tmp, trace):
            if os.path.exists(path):
                os.remove(path)
    index()
    return out / f"{name}.ipynb"


def _profile_title(chapter: str, profile: str) -> str:
    """How the title of a page of a profile ``paper-<what>`` names its scale: its profile's comment
    up to the first colon ("# With three initial scales: ..." gives "with three initial scales")."""
    head = _profile_comment(chapter, profile).split(":", 1)[0].strip()
    return (head[:1].lower() + head[1:]) if head else f"with its {profile} profile"


def _profile_comment(name: str, profile: str | None = None) -> str:
    """The leading comment of the profile of a page (or of ``chapter``, ``profile``): what it runs
    and what it costs."""
    chapter, profile = (name, profile) if profile else pages()[name]
    path = ch.book_dir() / "profiles" / chapter / f"{profile}.yaml"
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def _resumed(record: dict) -> str:
    """For a run that found most of its networks in the results cache (one resumed after an
    interruption): how many it trained, so that its wall time is not read as the profile's cost."""
    networks, trained = record.get("networks", 0), record.get("trained", 0)
    first = record.get("first")
    if first and first["trained"] * 2 > networks:
        return f" from the results cache (the run that trained it: {_duration(first['wall_seconds'])})"
    if not networks or trained * 2 > networks:
        return ""
    return f" (resumed: {trained} of its {networks} networks trained in it; the profile states the cost)"


def index_text() -> str:
    """The table of the part's index page: per chapter with a paper profile, the stored run (date,
    machine, wall time, claims) or, where none is stored, what the profile says it costs."""
    from .claims import Claim, read_notebook as read_claims

    have = stored()
    rows = ["| chapter | stored run | what it runs and costs |", "|---|---|---|"]
    for name, (chapter, profile) in pages().items():
        if name in have:
            r = _record(have[name])
            claims = [Claim(**c) for c in read_claims(have[name])]
            held = sum(c.holds for c in claims)
            status = (f"{{doc}}`{r.get('date', '?')} <{name}>`: {r.get('machine', {}).get('device', '?')}, "
                      f"{_duration(r.get('wall_seconds', 0))}{_resumed(r)}, {held} of {len(claims)} of the "
                      f"chapter's claims hold at this scale")
        else:
            status = "not yet run"
        which = "" if profile == PROFILE else f", profile `{profile}`"
        rows.append(f"| {{doc}}`../{chapter}`{which} | {status} | {_profile_comment(name)} |")
    return "\n".join(rows)


def toc_part() -> dict:
    """The book's part "At the paper's scale" in ``_toc.yml``: the index page, then every stored
    page (a page the table of contents leaves out would fail the book's build)."""
    have = stored()
    return {"caption": "At the paper's scale",
            "chapters": [{"file": "book/paper/index"}] + [{"file": f"book/paper/{name}"} for name in pages()
                                                          if name in have]}


def update_toc(path: Path | None = None) -> Path:
    """Rewrite the paper part of ``_toc.yml`` (the last part) from :func:`toc_part`."""
    import yaml

    path = path or ch.book_dir().parent / "_toc.yml"
    toc = yaml.safe_load(path.read_text())
    parts = [p for p in toc.get("parts", []) if p.get("caption") != toc_part()["caption"]]
    toc["parts"] = parts + [toc_part()]
    path.write_text(yaml.safe_dump(toc, sort_keys=False, allow_unicode=True))
    return path


def index(path: Path | None = None) -> Path:
    """Rewrite the stored-runs table of ``book/paper/index.md`` (between its markers) and the
    part's pages in ``_toc.yml``."""
    if path is None:
        update_toc()
    path = path or folder() / "index.md"
    text = path.read_text()
    if INDEX_START not in text or INDEX_END not in text:
        raise ConfigError(f"{path} lacks the markers {INDEX_START} ... {INDEX_END}")
    head, rest = text.split(INDEX_START, 1)
    _, tail = rest.split(INDEX_END, 1)
    path.write_text(f"{head}{INDEX_START}\n{index_text()}\n{INDEX_END}{tail}")
    return path


def runs_table() -> "pd.DataFrame":
    """The stored runs, one row per page: date, machine (CPU, instruction set), device, wall time
    in hours, networks trained by that run and networks used, and its claims (held of all). A
    page executed again from the results cache gives the wall time and networks of the run that
    trained them (its record's "first")."""
    import pandas as pd

    from .claims import Claim, read_notebook as read_claims

    rows = []
    for name, path in stored().items():
        r = _record(path)
        m = r.get("machine", {})
        trained_by = r.get("first") or r
        claims = [Claim(**c) for c in read_claims(path)]
        rows.append({"chapter": name, "date": r.get("date"),
                     "machine": f"{m.get('cpu')} ({m.get('instruction_set')})", "device": m.get("device"),
                     "wall, h": trained_by.get("wall_seconds", 0) / 3600,
                     "networks trained": trained_by.get("trained"),
                     "networks used": r.get("networks"),
                     "claims held": f"{sum(c.holds for c in claims)} of {len(claims)}"})
    columns = ["chapter", "date", "machine", "device", "wall, h", "networks trained", "networks used",
               "claims held"]
    return pd.DataFrame(rows, columns=columns).set_index("chapter")


def record(name: str) -> dict:
    """How the stored page ``name`` (a chapter's paper-scale page, or another of :func:`pages`)
    was made (its notebook's ``metadata["identlib"]["run"]``: date, machine, wall time, networks,
    the profile and its ``parameters``), or ``{}`` if no page is stored."""
    page = stored().get(name)
    return {} if page is None else _record(page)


def _record(page: Path) -> dict:
    return ch.read_notebook(page).metadata.get("identlib", {}).get("run", {})


def glued(name: str) -> dict:
    """The values the stored page ``name`` (a chapter's paper-scale page, or another of
    :func:`pages`) glued for its prose (name -> number or text), or ``{}`` if no page is stored:
    how a chapter at its own scale quotes the paper-scale run
    (``il.paper.glued("layers")["layers_deep_lost"]``)."""
    import ast

    page = stored().get(name)
    if page is None:
        return {}
    out = {}
    for cell in json.loads(page.read_text(encoding="utf-8"))["cells"]:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            text = o.get("data", {}).get("application/papermill.record/text/plain")
            if name and text is not None:
                try:
                    out[name] = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    out[name] = text
    return out


@dataclass(frozen=True)
class Quote:
    """What a chapter quotes from a stored page (:func:`quote`): the page's path (``None`` if it is
    not stored; every other field is then empty), its glued values, the parameters of its run,
    its claims by name (each a dict: value, op, threshold, n, over, holds) and the names of those
    that fail."""

    page: Path | None
    glued: dict
    parameters: dict
    claims: dict
    failed: list

    def value(self, key: str, default=float("nan")):
        """A glued value of the page, or ``default`` (NaN) where the page or the key is missing."""
        return self.glued.get(key, default)


def quote(name: str) -> Quote:
    """The stored page ``name`` as its chapter at the default settings quotes it: how a chapter says
    what changes at the paper's scale (or at a profile ``paper-<what>``) with every number glued.

    >>> quote("no-such-page").page is None and quote("no-such-page").value("x") != 0
    True
    """
    from .claims import read_notebook as read_claims

    page = stored().get(name)
    if page is None:
        return Quote(None, {}, {}, {}, [])
    found = read_claims(page)
    return Quote(page, glued(name), record(name).get("parameters", {}), {c["name"]: c for c in found},
                 failed_claims(page))
