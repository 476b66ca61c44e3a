"""Temporary: the name-guessing validation the chapters used before :func:`identlib.chapter`."""
from .config import FIELDS, ConfigError, _check

def _parse_list(name: str, value) -> list:
    """Sweep axes may arrive from papermill's -p as strings such as "[1, 2, 6]" or "1,2,6"."""
    if isinstance(value, str):
        import yaml

        text = value.strip()
        if not text.startswith("["):
            text = f"[{text}]"
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"{name} must be a list such as [1, 2, 6] (got {value!r})") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or len(value) == 0:
        raise ConfigError(f"{name} must be a non-empty list (got {value!r})")
    return list(value)


def check_sweep(name: str, value) -> list:
    """Validate a sweep axis: a list parameter whose name is a config field plus "s"
    (``depths`` sweeps ``depth``), or a named rule below. Returns the parsed list.

    >>> check_sweep("depths", "[1, 2, 6]")
    [1, 2, 6]
    >>> check_sweep("depths", [1, 0])
    Traceback (most recent call last):
    ...
    identlib.config.ConfigError: depths: depth must be an integer >= 1 (got 0)
    """
    items = _parse_list(name, value)
    field = name[:-1] if name.endswith("s") else name
    for item in items:
        if field in FIELDS:
            try:
                _check(field, item, FIELDS[field].type)
            except ConfigError as err:
                raise ConfigError(f"{name}: {err}") from None
        elif name in SWEEP_RULES:
            SWEEP_RULES[name](name, item)
        else:
            raise ConfigError(f"no validation rule for the sweep axis {name!r}")
    return items


def _unit(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
        raise ConfigError(f"{name}: every value must be a number in [0, 1] (got {v!r})")


def _int_at_least(least):
    def rule(name, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise ConfigError(f"{name} must be an integer >= {least} (got {v!r})")
    return rule


_positive_int = _int_at_least(1)


# Rules for chapter parameters that are not config fields: scalars, and sweep axes (per element).
def _count(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ConfigError(f"{name} must be an integer >= 0, 0 to skip (got {v!r})")


SUMMARIES = ("pc", "mean")    # how identlib.layers sums a layer's channels into one map


def _summary(name, v):
    if v not in SUMMARIES:
        raise ConfigError(f"{name} must be one of {', '.join(SUMMARIES)} (got {v!r})")


RULES = {
    "wide_channels": _count,
    "n_probes": _positive_int,
    "n_test": _positive_int,
    "epochs": _positive_int,
    "summary": _summary,             # the layer chapter
    "ring_width": _positive_int,
}
# A chapter section that trains with other settings names them <field><suffix> (lr_60k).
SECTION_SUFFIXES = ("_60k",)
SWEEP_RULES = {
    "rhos": _unit,
    "channel_counts": _positive_int,
    "snapshots": lambda name, v: _int_at_least(0)(f"{name}: every value", v),
}


def validate_parameters(params: dict) -> dict:
    """Validate a chapter's parameters by name: config fields by the config's rules, sweep axes
    element-wise, and the other names by :data:`RULES`. Returns them with sweep axes parsed.

    >>> validate_parameters({"lr": 0.1, "depths": "1,2"})
    {'lr': 0.1, 'depths': [1, 2]}
    """
    out = {}
    for name, value in params.items():
        if name in FIELDS:
            if FIELDS[name].type == "float" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            _check(name, value, FIELDS[name].type)
        elif name in SWEEP_RULES or (name.endswith("s") and name[:-1] in FIELDS):
            value = check_sweep(name, value)
        elif name in RULES:
            RULES[name](name, value)
        elif name.endswith(SECTION_SUFFIXES) and name.rsplit("_", 1)[0] in FIELDS:
            field = name.rsplit("_", 1)[0]
            if FIELDS[field].type == "float" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            try:
                _check(field, value, FIELDS[field].type)
            except ConfigError as err:
                raise ConfigError(f"{name}: {err}") from None
        elif "_" in name and name.split("_", 1)[1] in FIELDS.keys() | SWEEP_RULES.keys() | _plurals():
            # a section's own setting, <section>_<field or sweep>: map_lrs, study_depths
            inner = name.split("_", 1)[1]
            try:
                value = validate_parameters({inner: value})[inner]
            except ConfigError as err:
                raise ConfigError(f"{name}: {err}") from None
        else:
            raise ConfigError(f"no validation rule for parameter {name!r}")
        out[name] = value
    return out


def _plurals() -> set:
    return {f + "s" for f in FIELDS}
