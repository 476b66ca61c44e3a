"""Command line: ``python -m identlib`` (or ``identlib``).

    identlib chapters                        list the chapters and their profiles
    identlib params CHAPTER                  a chapter's parameters, defaults and meaning
    identlib run CHAPTER [-p NAME VALUE]... [--profile NAME] [-o OUT.ipynb]
                                             validate, then execute a chapter with papermill
    identlib refresh [CHAPTER]... [--jobs N] re-execute chapters with their defaults, in place
                                             (N at a time in separate processes)
    identlib refresh --profile paper [PAGE]...
                                             execute chapters with their paper profile into
                                             book/paper/CHAPTER.ipynb, and with a profile
                                             paper-WHAT into book/paper/CHAPTER-WHAT.ipynb
                                             (resuming from the cache)
    identlib train [-p FIELD VALUE]...       train one config (cached) and score it on the panel
    identlib claims CHAPTER|NOTEBOOK         the claims table stored in a chapter (exit 1 if a
                                             claim fails or none is stored)

``--scheduler local:N`` or ``--scheduler tcp://host:8786`` (before the command) trains the networks
in N local worker processes or on a Dask cluster (``$IDENTLIB_SCHEDULER``).

Values are read as YAML (``-p depths "[1, 2]"``, ``-p lr 1e-3``, ``-p bias true``). Unknown names
and invalid values are refused with one line before anything runs.

Every failure ends with one line on stderr that says what happened and what to do, and an exit
status: 2 for bad input (parameters, data files, paths), 1 for a run that failed (a diverging
training, a chapter that raised, a claim that does not hold), 130 for an interrupt (Ctrl-C), which
keeps every network that finished and says how to resume. ``--debug`` (or ``IDENTLIB_DEBUG=1``)
shows the traceback instead.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import yaml

from .config import ConfigError

__all__ = ["main"]


def _value(text: str):
    """A command-line value: int, float (``1e-3`` too), else YAML (lists, booleans), else text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None else value


def _overrides(pairs) -> dict:
    return {name: _value(text) for name, text in pairs or []}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="identlib", description="Identity Crisis, the executable book")
    ap.add_argument("--debug", action="store_true", help="show the traceback of a failure (also IDENTLIB_DEBUG=1)")
    ap.add_argument("--scheduler", metavar="ADDRESS", help="where networks are trained: local:N worker "
                    "processes, or a Dask scheduler such as tcp://host:8786 (sets IDENTLIB_SCHEDULER)")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("chapters", help="list chapters and their profiles")
    p = sub.add_parser("params", help="show a chapter's parameters")
    p.add_argument("chapter")
    r = sub.add_parser("run", help="validate and execute a chapter with papermill")
    r.add_argument("chapter")
    r.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"))
    r.add_argument("--profile", help="a profile name (book/profiles/CHAPTER/NAME.yaml) or a YAML file")
    r.add_argument("-o", "--output", help="output notebook (default _build/runs/CHAPTER[-PROFILE].ipynb)")
    r.add_argument("--check", action="store_true", help="validate only, execute nothing")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    f = sub.add_parser("refresh", help="re-execute chapters (default: all) with their defaults, "
                       "storing the outputs in the notebooks; a failing run changes nothing")
    f.add_argument("chapter", nargs="*")
    f.add_argument("--jobs", type=int, default=1, help="chapters executed at a time, each in its own "
                   "process (default 1); a chapter that loads another's networks waits for it")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.add_argument("--profile", choices=["paper"], help="paper: execute the stored pages' chapters with "
                   "their paper profiles (a name CHAPTER-WHAT: with the profile paper-WHAT) and store the "
                   "runs in book/paper/ (default: every page), one at a time")
    t = sub.add_parser("train", help="train one run config and print its scores on the test panel")
    t.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("FIELD", "VALUE"))
    c = sub.add_parser("claims", help="print the claims stored in a chapter's notebook; exit 1 if one fails")
    c.add_argument("chapter", help="a chapter name, or the path of an executed notebook")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    debug = args.debug or os.environ.get("IDENTLIB_DEBUG", "") not in ("", "0")
    start = time.time()
    if args.scheduler is not None:              # chapters' kernels inherit it
        os.environ["IDENTLIB_SCHEDULER"] = args.scheduler
    try:
        if args.scheduler is not None:
            from .runtime import scheduler

            scheduler()                         # a malformed one is refused before anything runs
        return _dispatch(args)
    except Exception as err:                    # noqa: BLE001 - a chapter whose kernel was interrupted
        from .chapters import ChapterError

        if not (isinstance(err, ChapterError) and err.ename == "KeyboardInterrupt"):
            return _fail(err, debug)
        if debug:
            raise
        return _interrupted(start)
    except KeyboardInterrupt:
        if debug:
            raise
        return _interrupted(start)


def _fail(err: Exception, debug: bool) -> int:
    if debug:
        raise err
    status, line = _explain(err)
    print(f"identlib: {line}", file=sys.stderr)
    return status


def _interrupted(start: float) -> int:
    kept = _kept_since(start)
    print(f"identlib: interrupted; {kept} network(s) trained in this run are kept in the results cache "
          f"and nothing half-written was left; run the same command again to resume", file=sys.stderr)
    return 130


def _one_line(text: str) -> str:
    lines = [t.strip() for t in str(text).strip().splitlines() if t.strip()]
    return lines[0] if lines else ""


def _explain(err: Exception) -> tuple[int, str]:
    """(exit status, one line) for a failure."""
    from papermill.exceptions import PapermillExecutionError

    from . import chapters as ch
    from .data import DataError
    from .train import TrainingDiverged

    if isinstance(err, ConfigError):
        return 2, str(err)
    if isinstance(err, DataError):
        return 2, _one_line(err)
    if isinstance(err, TrainingDiverged):
        return 1, _one_line(err)
    if isinstance(err, (ch.ChapterFailed, ch.ChapterError)):
        return 1, str(err)
    if isinstance(err, PapermillExecutionError):
        return 1, f"cell {err.cell_index + 1} raised {err.ename}: {_one_line(err.evalue)}"
    if isinstance(err, OSError):
        if err.filename:
            return 2, f"{err.strerror or _one_line(err)} ({err.filename}); check the path and its permissions"
        return 2, err.strerror or _one_line(err)
    return 1, f"{type(err).__name__}: {_one_line(err)} (run with --debug for the traceback)"


def _kept_since(start: float) -> int:
    """Networks stored in the results cache since ``start``."""
    from .cache import stored_since

    return len(stored_since(start))


def _dispatch(args) -> int:
    from . import chapters as ch

    if args.command == "chapters":
        for name in ch.chapters():
            extra = ", ".join(ch.profiles(name))
            print(f"{name}" + (f"  (profiles: {extra})" if extra else ""))
    elif args.command == "params":
        for name, p in ch.parameters(args.chapter).items():
            print(f"{name} = {p['default']!r}  # {p['help']}")
    elif args.command == "run":
        params = ch.resolve(args.chapter, _overrides(args.parameter), args.profile)
        if args.check:
            print(f"{args.chapter}: parameters valid: {params}")
            return 0
        suffix = f"-{args.profile}" if args.profile and "/" not in args.profile else ""
        out = args.output or f"_build/runs/{args.chapter}{suffix}.ipynb"
        print(f"executing {args.chapter} with {params} -> {out}", file=sys.stderr)
        ch.execute(args.chapter, out, params, progress=not args.no_progress)
    elif args.command == "refresh" and args.profile:
        from . import paper

        names = args.chapter or list(paper.pages())
        for name in names:                              # every name checked before anything runs
            paper.check(name)
        for name in names:
            chapter, profile = paper.pages()[name]
            print(f"executing {chapter} with its {profile} profile -> book/paper/{name}.ipynb",
                  file=sys.stderr)
            paper.store(name, progress=not args.no_progress)
    elif args.command == "refresh":
        if args.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1 (got {args.jobs})")
        if args.jobs > 1:
            try:
                ch.refresh_all(args.chapter or None, args.jobs)
            except ch.ChapterFailed as err:
                print(f"identlib: {err}", file=sys.stderr)
                return 1
            return 0
        for name in args.chapter or list(ch.chapters()):
            print(f"refreshing {name}", file=sys.stderr)
            ch.refresh(name, progress=not args.no_progress)
    elif args.command == "train":
        _train(_overrides(args.parameter))
    elif args.command == "claims":
        return _claims(args.chapter)
    return 0


def _claims(chapter: str) -> int:
    from pathlib import Path

    from . import chapters as ch
    from .claims import Claim, read_notebook

    path = Path(chapter) if chapter.endswith(".ipynb") else ch._chapter_path(chapter)
    if not path.exists():
        raise ConfigError(f"no notebook at {path}")
    claims = [Claim(**c) for c in read_notebook(path)]
    if not claims:
        print(f"identlib: {path.name} stores no claims table; execute it first "
              f"(identlib refresh {path.stem})", file=sys.stderr)
        return 1
    width = max(len(c.name) for c in claims)
    for c in claims:
        print(f"{'holds' if c.holds else 'FAILS'}  {c.name:<{width}}  {c.value:>8.3g}  {c.rule()}  ({c.n} {c.over})")
    failed = [c.name for c in claims if not c.holds]
    print(f"{path.stem}: {len(claims) - len(failed)} of {len(claims)} claims hold")
    nb = ch.read_notebook(path) if failed else None
    if failed and nb.metadata.get("identlib", {}).get("run"):
        # a stored page (book/paper/): a claim written for the chapter's defaults may fail at its
        # scale, provided the page's note names it
        from . import paper

        note = paper.note_cell(nb).source
        silent = [name for name in failed if f"*{name}*" not in note]
        for name in silent:
            print(f"identlib: {path.name}: the claim {name!r} fails and the page's note does not name it; "
                  "store the page again (identlib refresh --profile paper)", file=sys.stderr)
        if not silent:
            print(f"{path.stem}: the {len(failed)} that fail at this page's scale are named in its note")
        return 1 if silent else 0
    return 1 if failed else 0


def _train(fields: dict) -> None:
    from . import data, experiments
    from .config import RunConfig

    try:
        config = RunConfig(**fields)
    except TypeError:
        unknown = set(fields) - set(RunConfig.__dataclass_fields__)
        raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}; fields: "
                          f"{', '.join(RunConfig.__dataclass_fields__)}") from None
    print(config)
    run = experiments.run(config)
    panel = data.test_panel(config.train_index)
    df = experiments.evaluate([run], panel.images, name=panel.names, fields=[])
    print(f"final training loss {run.final_loss:.3g} after {len(run.loss)} steps")
    print(df.drop(columns="label").round(3).to_string(index=False))
