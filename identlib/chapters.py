"""Chapters as parameterized notebooks: their parameters, profiles, validation and execution.

A chapter is ``book/<name>.ipynb`` with a cell tagged ``parameters`` (papermill's convention).
Its parameter names are identical to :class:`~identlib.config.RunConfig` fields (or sweep axes over
them, such as ``depths``), so the same rules validate a notebook run, a YAML profile and the
command line. A profile is ``book/profiles/<chapter>/<profile>.yaml`` holding only overrides.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

from .config import ConfigError, validate_parameters

__all__ = ["book_dir", "chapters", "parameters", "profiles", "load_profile", "resolve", "execute", "refresh"]


def book_dir() -> Path:
    """``$IDENTLIB_BOOK_DIR``, else the ``book/`` folder beside the package (a source checkout)."""
    env = os.environ.get("IDENTLIB_BOOK_DIR")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "book"
    if not path.is_dir():
        raise FileNotFoundError(f"no book folder at {path}; set IDENTLIB_BOOK_DIR")
    return path


def chapters() -> dict[str, Path]:
    """Chapter name -> notebook path, for every notebook in the book with a parameters cell."""
    import nbformat

    out = {}
    for nb_path in sorted(p for p in book_dir().glob("*.ipynb") if not p.name.startswith(".")):
        nb = nbformat.read(nb_path, as_version=4)
        if any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
            out[nb_path.stem] = nb_path
    return out


def _chapter_path(chapter: str) -> Path:
    known = chapters()
    if chapter not in known:
        raise ConfigError(f"unknown chapter {chapter!r}; chapters: {', '.join(known)}")
    return known[chapter]


def parameters(chapter: str) -> dict[str, dict]:
    """name -> {"default": value, "help": the trailing comment} of a chapter's parameters cell."""
    import papermill

    out = {}
    for name, p in papermill.inspect_notebook(str(_chapter_path(chapter))).items():
        out[name] = {"default": ast.literal_eval(p["default"]), "help": p["help"].strip()}
    return out


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
    validate_parameters(full)          # the whole set, so cross-checks see the final values
    return validate_parameters(merged)


def execute(chapter: str, output: str | Path, overrides: dict | None = None,
            profile: str | None = None, progress: bool = True) -> Path:
    """Validate, then execute the chapter with papermill into ``output``."""
    import papermill

    params = resolve(chapter, overrides, profile)
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    src = _chapter_path(chapter)
    absolute_env_paths()
    papermill.execute_notebook(str(src), str(output), parameters=params, cwd=str(src.parent),
                               kernel_name="python3", progress_bar=progress)
    return output


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

    nb = nbformat.read(path, as_version=4)
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
        execute(chapter, tmp, {}, progress=progress)
        _strip_volatile(Path(tmp))
        os.chmod(tmp, src.stat().st_mode)          # mkstemp's files are private (0600)
        os.replace(tmp, src)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return src
