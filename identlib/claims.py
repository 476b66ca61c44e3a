"""A chapter's scientific results, stated as checked claims, and the numbers its prose shows.

Deep networks trained on one image are chaotic: the same config and seed give other digits with
other CPU kernels (AVX2 against AVX-512) or on a GPU. A chapter therefore states each result as a
claim: a measured value, the rule it must meet (a threshold set from the spread over seeds, with a
margin) and how many seeds or networks it covers. :meth:`Claims.check` prints one line that does
not depend on the digits (so a re-executed chapter compares equal wherever the claim holds) and
raises :class:`ClaimFailed`, naming the claim, its value and its threshold, where it does not.
:meth:`Claims.table` ends the chapter with every claim; ``identlib claims CHAPTER`` prints that
table from the stored notebook and exits non-zero if a claim failed.

:func:`glue` hands a value to the prose (MyST-NB's ``{glue:text}`` role), so that no result number is
typed by hand.

>>> claims = Claims()
>>> c = claims.check("depth-1 identity", 0.998, ">=", 0.95, n=3, over="seeds")
claim 'depth-1 identity': holds (value >= 0.95 over 3 seeds)
>>> claims.check("depth-20 constant", 0.41, ">=", 0.9, n=3, over="seeds")
Traceback (most recent call last):
...
identlib.claims.ClaimFailed: claim 'depth-20 constant' fails: 0.41 is not >= 0.9 (3 seeds)
"""
from __future__ import annotations

import json
import math
import operator
from dataclasses import asdict, dataclass

__all__ = ["Claim", "Claims", "ClaimFailed", "glue", "MIME", "read_notebook"]

MIME = "application/vnd.identlib.claims+json"     # the claims table's machine-readable output

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}


class ClaimFailed(AssertionError):
    """A claim whose measured value does not meet its rule."""


@dataclass(frozen=True)
class Claim:
    name: str            # short, unique in the chapter
    value: float         # what was measured
    op: str              # ">=", "<=", ">", "<", "==", or "in" (a closed range)
    threshold: object    # a number, or [low, high] for "in"
    n: int               # seeds, networks or inputs the value covers
    over: str            # what n counts: "seeds", "networks", "inputs", ...
    holds: bool

    def rule(self) -> str:
        if self.op == "in":
            return f"value in [{_num(self.threshold[0])}, {_num(self.threshold[1])}]"
        return f"value {self.op} {_num(self.threshold)}"


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _plain(value):
    """numpy and torch scalars as Python numbers (their repr would reach the prose otherwise)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    return value


class Claims:
    """The claims of one chapter, in the order they are checked.

    ``strict`` (the default) raises :class:`ClaimFailed` at a claim that fails. A chapter run with
    other parameters than its own (the defaults or a named profile) is an experiment whose
    results may well differ: :func:`identlib.chapter` then makes its claims report, not raise, so
    the chapter runs to its end and its claims table shows which ones fail.
    """

    def __init__(self, strict: bool = True):
        self.claims: list[Claim] = []
        self.strict = strict

    def check(self, name: str, value, op: str, threshold, *, n: int, over: str = "seeds",
              glue_as: str | None = None) -> Claim:
        """Record the claim that ``value op threshold`` (``op`` "in": ``low <= value <= high``),
        measured over ``n`` ``over``; print its line and raise :class:`ClaimFailed` if it fails.
        With ``glue_as`` the value is also glued under that name for the prose."""
        value = _plain(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"claim {name!r}: the value must be a number (got {value!r})")
        if op == "in":
            low, high = threshold
            holds = low <= value <= high
            threshold = [_plain(low), _plain(high)]
        elif op in _OPS:
            threshold = _plain(threshold)
            holds = bool(_OPS[op](value, threshold))
        else:
            raise ValueError(f"claim {name!r}: op must be one of {', '.join([*_OPS, 'in'])} (got {op!r})")
        if isinstance(value, float) and math.isnan(value):
            holds = False
        if any(c.name == name for c in self.claims):
            raise ValueError(f"claim {name!r} is stated twice in this chapter")
        claim = Claim(name, value, op, threshold, int(n), over, bool(holds))
        self.claims.append(claim)
        if glue_as:
            glue(glue_as, value)
        if not claim.holds:
            message = f"claim {name!r} fails: {value:.3g} is not {claim.rule()[6:]} ({n} {over})"
            if self.strict:
                raise ClaimFailed(message)
            print(f"{message} (reported: these are not the chapter's own settings)")
            return claim
        print(f"claim {name!r}: holds ({claim.rule()} over {n} {over})")
        return claim

    def frame(self):
        """The claims as a table: claim, value, rule, n, holds."""
        import pandas as pd

        return pd.DataFrame([{"claim": c.name, "value": round(c.value, 3), "rule": c.rule(),
                              "n": f"{c.n} {c.over}", "holds": c.holds} for c in self.claims])

    def table(self):
        """Display the claims table. Its plain text (what nbval compares) holds each claim's rule
        and outcome but not its digits; the HTML (what the book shows) adds the measured values;
        the JSON is what ``identlib claims`` reads."""
        from IPython.display import display

        lines = [f"{'holds' if c.holds else 'FAILS'}  {c.name}  ({c.rule()}, {c.n} {c.over})" for c in self.claims]
        lines.append(f"{sum(c.holds for c in self.claims)} of {len(self.claims)} claims hold")
        bundle = {"text/plain": "\n".join(lines), "text/html": self.frame().to_html(index=False),
                  MIME: [_finite_or_text(asdict(c)) for c in self.claims]}
        display(bundle, raw=True)


def glue(name: str, value) -> None:
    """Glue ``value`` (a number or a string) for the prose, as MyST-NB's ``glue(..., display=False)``
    does, after turning numpy and torch scalars into Python ones. In markdown:
    ``{glue:text}`name:.2f```."""
    from myst_nb import glue as _glue

    value = _plain(value)
    if not isinstance(value, (int, float, str)):
        raise TypeError(f"glue {name!r}: only numbers and strings are glued (got {type(value).__name__})")
    _glue(name, value, display=False)


def read_notebook(path) -> list[dict]:
    """The claims a stored notebook's claims table records (empty if it has none): ``path``, or
    a notebook already read (a dict or nbformat node)."""
    nb = path if isinstance(path, dict) else json.loads(open(path, encoding="utf-8").read())
    found = []
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if MIME in data:
                found = data[MIME]
    return [dict(c, value=_number(c["value"])) for c in found]


def _finite_or_text(claim: dict) -> dict:
    """A claim as JSON can hold it: a value that is not finite as the text "inf", "-inf" or "nan"
    (which :func:`read_notebook` reads back as a number), not as a float that JSON has no word for."""
    value = claim["value"]
    return dict(claim, value=str(value)) if isinstance(value, float) and not math.isfinite(value) else claim


def _number(value):
    """A claim's stored value as a number: Jupyter stores a float that is not finite (a claim
    whose quantity does not exist, such as the first depth of a run of depths that has none) as
    the string "inf", "-inf" or "nan"."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value
