"""Challenge definition files: a :class:`~flare_eval.presets.Preset` written as TOML, checked.

The shipped presets are such files (``flare_eval/challenges/*.toml``), and ``--preset`` takes a
name or the path of a user's file.  A definition has one key per item of :class:`Preset`,
spelled as the dataclass spells it, with the label map as ``[[classes]]`` tables and the
ranking criteria as ``[[ranking_metrics]]`` tables::

    name = "toy3"
    title = "A three-label toy challenge"
    lesion_label = 3                  # omit: no lesion class
    z_crop_labels = []
    single_slice_z_crop = "keep"
    nsd_dsc_threshold = 0.0
    ...
    [lesions]                         # required exactly with a lesion_label
    connectivity = 26
    iou_threshold = 0.5
    match = "iou"

    [[classes]]
    label = 1
    name = "Kidney"
    description = "kidney"
    tolerance_mm = 3.0
    group = "large"

    [[ranking_metrics]]
    name = "organ_dsc"
    higher_is_better = true

Every item is required (no silent default), except ``lesion_label`` and a class's
``description``.  ``base = "flare23"`` starts from a shipped definition instead (which may
have a base of its own): the file's keys replace the base's (a ``classes`` or
``ranking_metrics`` array as a whole, the ``[lesions]`` table key by key).  The runtime
criterion's floor is always ``runtime_tolerance_s`` (one place), so it is not written.

:func:`load_definition` reports every mistake of a file at once, one line each (unknown key
with the closest known one, a label twice, a tolerance that is not positive...).  The same
checks read the JSON form (:meth:`Preset.describe`, recorded in every output), so a recorded
definition can be loaded again; its ``content_sha256`` must then match.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from flare_eval.errors import ConfigError

if TYPE_CHECKING:
    from flare_eval.presets import Preset

__all__ = ["AGGREGATES", "BUILTIN_DIR", "CONNECTIVITIES", "MATCH_MODES", "OUT_OF_MAP_POLICIES",
           "RANKING_METRIC_NAMES", "SCHEMES", "TIE_METHODS", "aggregate_problem", "builtin_names",
           "connectivity_problem", "iou_threshold_problem", "load_definition",
           "preset_from_mapping", "to_toml"]

#: The shipped definitions, one ``<name>.toml`` each.
BUILTIN_DIR = "challenges"
#: Per-case criteria the ranking knows (:mod:`flare_eval.ranking.table`).
RANKING_METRIC_NAMES = ("organ_dsc", "organ_nsd", "lesion_dsc", "lesion_nsd", "runtime", "gpu_auc")
#: Voxel neighbourhoods and matching modes of lesion instances (:mod:`flare_eval.metrics.lesions`
#: applies them and checks its arguments with these same rules).
CONNECTIVITIES: tuple[int, ...] = (6, 18, 26)
MATCH_MODES: tuple[str, ...] = ("iou", "overlap")
_GROUPS = ("large", "small", "tubular", "lesion")
#: Ranking schemes, tie methods and per-criterion aggregates (:mod:`flare_eval.ranking.schemes`).
SCHEMES: tuple[str, ...] = ("flare", "rank-then-aggregate", "aggregate-then-rank", "test-then-rank")
#: R's ``rank(ties.method=...)`` names; ``first`` is scipy's ``ordinal``.
TIE_METHODS: tuple[str, ...] = ("min", "average", "max", "dense", "first")
AGGREGATES: tuple[str, ...] = ("mean", "median")
#: What a prediction value outside the label map gets (:attr:`Preset.out_of_map_labels`).
OUT_OF_MAP_POLICIES: tuple[str, ...] = ("background", "zero_case")


def _number(low: float, high: float = math.inf, *, low_open: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"must be a number, got {value!r}"
        if value < low or (low_open and value == low) or value > high:
            if low_open and high == math.inf:
                return f"must be positive, got {value!r}"
            span = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
            return f"must lie in {span}, got {value!r}"
        return None
    return check


def _choice(*allowed: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"must be one of {list(allowed)}, got {v!r}"


def _integer(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"must be a whole number in {low}..{high}, got {value!r}"
        return None
    return check


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else f"must be a non-empty string, got {value!r}"


def iou_threshold_problem(value: Any) -> str | None:
    """What is wrong with a lesion matching threshold, or None.

    A pair matches when IoU > threshold, so it must lie in [0, 1): 1 or more would match
    nothing, a negative value disjoint lesions.

    Examples
    --------
    >>> iou_threshold_problem(0.5) is None
    True
    >>> iou_threshold_problem(1.0)
    'must be in [0, 1) (a pair matches when IoU > threshold), got 1.0'
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        return f"must be in [0, 1) (a pair matches when IoU > threshold), got {value!r}"
    return None


def connectivity_problem(value: Any) -> str | None:
    """What is wrong with a lesion connectivity (a whole number of :data:`CONNECTIVITIES`), or
    None."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in CONNECTIVITIES:
        return f"must be one of {list(CONNECTIVITIES)}, got {value!r}"
    return None


def aggregate_problem(scheme: str, aggregate: str) -> str | None:
    """What is wrong with a criterion's aggregate under a ranking scheme, or None.

    The aggregate is what a per-metric scheme takes of a criterion's cases: of its case ranks
    (``rank-then-aggregate``) or of its values (``aggregate-then-rank``).  ``flare`` pools
    every case x metric rank into one mean and ``test-then-rank`` counts significant wins,
    so there only ``"mean"`` is accepted (a median would be silently ignored).

    Examples
    --------
    >>> aggregate_problem("aggregate-then-rank", "median") is None
    True
    >>> aggregate_problem("flare", "median")
    "aggregate 'median' needs scheme rank-then-aggregate or aggregate-then-rank, not 'flare'"
    """
    if aggregate not in AGGREGATES:
        return f"aggregate must be one of {list(AGGREGATES)}, got {aggregate!r}"
    if aggregate != "mean" and scheme not in ("rank-then-aggregate", "aggregate-then-rank"):
        return (f"aggregate {aggregate!r} needs scheme rank-then-aggregate or "
                f"aggregate-then-rank, not {scheme!r}")
    return None


def _labels(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return f"must be a list of labels, got {value!r}"
    return None


#: The scalar items and their checks; ``classes`` and ``ranking_metrics`` are checked apart.
_ITEMS: dict[str, Callable[[Any], str | None]] = {
    "name": _text,
    "title": _text,
    "lesion_label": _integer(1, 255),
    "z_crop_labels": _labels,
    "single_slice_z_crop": _choice("keep", "nan"),
    "nsd_dsc_threshold": _number(0.0, 1.0),
    "decimals": _integer(0, 15),
    "both_empty_value": _number(0.0, 1.0),
    "one_empty_value": _number(0.0, 1.0),
    "missing_prediction": _choice("fail", "error"),
    "out_of_map_labels": _choice(*OUT_OF_MAP_POLICIES),
    "runtime_tolerance_s": _number(0.0),
    "gpu_tolerance_mib": _number(0.0),
    "failed_runtime_s": _number(0.0),
    "failed_gpu_auc_mibs": _number(0.0),
    "tie_method": _choice(*TIE_METHODS),
    "ranking_scheme": _choice(*SCHEMES),
}
_OPTIONAL = {"lesion_label"}
_CLASS_ITEMS: dict[str, Callable[[Any], str | None]] = {
    "label": _integer(1, 255),
    "name": _text,
    "description": lambda v: None if isinstance(v, str) else f"must be a string, got {v!r}",
    "tolerance_mm": _number(0.0, low_open=True),
    "group": _choice(*_GROUPS),
}
_LESION_ITEMS: dict[str, Callable[[Any], str | None]] = {
    "connectivity": connectivity_problem,
    "iou_threshold": iou_threshold_problem,
    "match": _choice(*MATCH_MODES),
}
_METRIC_ITEMS: dict[str, Callable[[Any], str | None]] = {
    "name": _choice(*RANKING_METRIC_NAMES),
    "higher_is_better": lambda v: None if isinstance(v, bool) else f"must be true or false, got {v!r}",
    "weight": _number(0.0, low_open=True),
    "aggregate": _choice(*AGGREGATES),
    "floor": _number(-math.inf),
    "cap": _number(-math.inf),
}


def _unknown(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def _table(table: dict[str, Any], where: str, items: dict[str, Callable[[Any], str | None]],
           optional: set[str], problems: list[str]) -> bool:
    """Whether one table is valid; each mistake appended to ``problems`` under ``where``."""
    ok = True
    for name in table:
        if name not in items:
            problems.append(f"{where}: {_unknown(name, list(items))}")
            ok = False
    for name, check in items.items():
        if table.get(name) is None:  # null: the JSON form's "absent"
            if name not in optional:
                problems.append(f"{where}: missing key {name!r}")
                ok = False
        elif (problem := check(table[name])) is not None:
            problems.append(f"{where}: {name} {problem}")
            ok = False
    return ok


def _tables(data: dict[str, Any], key: str, items: dict[str, Callable[[Any], str | None]],
            optional: set[str], problems: list[str]) -> list[dict[str, Any]]:
    """The valid tables of the array ``key``; each mistake appended to ``problems``."""
    tables = data.get(key)
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        problems.append(f"{key}: expected one or more [[{key}]] tables")
        return []
    return [table for number, table in enumerate(tables, 1)
            if _table(table, f"{key} #{number}", items, optional, problems)]


def _lesion_rules(data: dict[str, Any], problems: list[str]) -> dict[str, Any] | None:
    """The valid ``[lesions]`` table, or None; it is required exactly with a lesion label."""
    table, lesion = data.get("lesions"), data.get("lesion_label")
    if table is None:
        if lesion is not None:
            problems.append("missing table [lesions] (connectivity, iou_threshold, match): "
                            "lesion_label is set")
        return None
    if not isinstance(table, dict):
        problems.append(f"lesions: expected a [lesions] table, got {table!r}")
        return None
    if lesion is None:
        problems.append("[lesions] needs a lesion_label")
    return table if _table(table, "lesions", _LESION_ITEMS, set(), problems) else None


def preset_from_mapping(data: dict[str, Any], *, where: str) -> Preset:
    """Check a definition (parsed TOML or the JSON of :meth:`Preset.describe`) and build it.

    Raises
    ------
    ConfigError
        Naming ``where`` and every mistake found, one per line.
    """
    problems: list[str] = []
    known = [*_ITEMS, "lesions", "classes", "ranking_metrics", "content_sha256"]
    for key in data:
        if key not in known:
            problems.append(_unknown(key, known))
    for key, check in _ITEMS.items():
        if key not in data:
            if key not in _OPTIONAL:
                problems.append(f"missing key {key!r}")
        elif data[key] is not None or key not in _OPTIONAL:
            if (problem := check(data[key])) is not None:
                problems.append(f"{key} {problem}")
    classes = _tables(data, "classes", _CLASS_ITEMS, {"description"}, problems)
    metrics = _tables(data, "ranking_metrics", _METRIC_ITEMS, {"floor", "cap"}, problems)
    lesion_rules = _lesion_rules(data, problems)
    # repeats are judged on every table, also those with another mistake
    every = [t for t in data.get("classes", []) if isinstance(t, dict)] \
        if isinstance(data.get("classes"), list) else []
    labels = [t.get("label") for t in every]
    for label in sorted({v for v in labels if isinstance(v, int) and labels.count(v) > 1}):
        positions = [str(n) for n, v in enumerate(labels, 1) if v == label]
        problems.append(f"label {label} twice (classes #{', #'.join(positions)})")
    names = [t.get("name") for t in every if isinstance(t.get("name"), str)]
    for name in sorted({v for v in names if names.count(v) > 1}):
        problems.append(f"class name {name!r} twice")
    for key in ("z_crop_labels",):
        for label in data.get(key, []) if isinstance(data.get(key), list) else []:
            if every and label not in labels:
                problems.append(f"{key}: label {label} is not in the label map {sorted(labels)}")
    lesion = data.get("lesion_label")
    if lesion is not None and every and lesion not in labels:
        problems.append(f"lesion_label {lesion} is not in the label map {sorted(labels)}")
    seen = [m["name"] for m in metrics]
    for name in sorted({v for v in seen if seen.count(v) > 1}):
        problems.append(f"ranking metric {name!r} twice")
    for metric in metrics:
        if lesion is None and metric["name"].startswith("lesion_"):
            problems.append(f"ranking metric {metric['name']!r} needs a lesion_label")
        if metric["name"].startswith("organ_") and every and all(v == lesion for v in labels):
            problems.append(f"ranking metric {metric['name']!r} needs an organ class (a class "
                            "other than the lesion_label)")
        if metric["name"] == "runtime" and metric.get("floor") not in (None, data.get("runtime_tolerance_s")):
            problems.append("ranking metric 'runtime': its floor is runtime_tolerance_s; set that instead")
        floor = metric.get("floor")
        if metric["name"] == "runtime" and _ITEMS["runtime_tolerance_s"](
                data.get("runtime_tolerance_s")) is None and data["runtime_tolerance_s"] > 0:
            floor = data["runtime_tolerance_s"]
        cap = metric.get("cap")
        # the cap is the worst value counted, the floor the best: the cap lies on the worse side
        if floor is not None and cap is not None and (
                cap >= floor if metric["higher_is_better"] else cap <= floor):
            side = "below" if metric["higher_is_better"] else "above"
            problems.append(f"ranking metric {metric['name']!r}: cap {cap} must lie {side} its "
                            f"floor {floor} (the cap is the worst value counted)")
        if data.get("ranking_scheme") in SCHEMES and (
                problem := aggregate_problem(data["ranking_scheme"], metric["aggregate"])):
            problems.append(f"ranking metric {metric['name']!r}: {problem}")
    # here, not at the top: flare_eval.presets builds its shipped presets with this module
    from flare_eval.presets import ClassInfo, LesionRules, Preset, RankingMetric

    if problems:
        raise ConfigError(f"challenge definition {where}: {len(problems)} problem(s):\n  - "
                          + "\n  - ".join(problems),
                          hint="see docs/challenge-definitions.md; flare-eval presets show flare23")
    preset = Preset(
        **{key: (tuple(data[key]) if key == "z_crop_labels" else data.get(key)) for key in _ITEMS},
        lesions=None if lesion_rules is None else LesionRules(
            lesion_rules["connectivity"], float(lesion_rules["iou_threshold"]),
            lesion_rules["match"]),
        classes=tuple(ClassInfo(c["label"], c["name"], c.get("description", ""),
                                float(c["tolerance_mm"]), c["group"]) for c in classes),
        ranking_metrics=tuple(RankingMetric(
            m["name"], m["higher_is_better"], float(m["weight"]), m["aggregate"],
            None if m.get("floor") is None else float(m["floor"]),
            None if m.get("cap") is None else float(m["cap"])) for m in metrics),
    )
    recorded = data.get("content_sha256")
    if recorded is not None and recorded != preset.content_sha256:
        raise ConfigError(f"challenge definition {where}: content_sha256 {recorded} does not match "
                          f"its content ({preset.content_sha256}); it was edited after recording")
    return preset


def _read_toml(path: Path, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"challenge definition {where}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"challenge definition {where}: cannot be read ({err})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"challenge definition {where}: not valid TOML ({err})") from None


def _builtin_path(name: str) -> Path:
    return Path(str(resources.files("flare_eval") / BUILTIN_DIR / f"{name}.toml"))


def builtin_names() -> list[str]:
    """Names of the shipped definitions, sorted."""
    folder = Path(str(resources.files("flare_eval") / BUILTIN_DIR))
    return sorted(p.stem for p in folder.glob("*.toml"))


def load_definition(source: str | Path) -> Preset:
    """The preset of a shipped name (``flare23``) or of a ``.toml`` / ``.json`` file.

    Raises
    ------
    ConfigError
        An unknown name (the message lists the shipped ones), an unreadable file, or the
        definition's mistakes (:func:`preset_from_mapping`).
    """
    text = str(source)
    path = Path(text)
    if text in builtin_names():
        path, where = _builtin_path(text), f"{text} ({BUILTIN_DIR}/{text}.toml)"
    elif path.suffix in (".toml", ".json") or path.is_file():
        where = str(path)
    else:
        raise ConfigError(f"unknown preset {text!r}; shipped presets: {builtin_names()}, or the "
                          "path of a .toml challenge definition")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"challenge definition {where}: cannot be read as JSON ({err})") from None
        return preset_from_mapping(data, where=where)
    return preset_from_mapping(_with_base(_read_toml(path, where), where), where=where)


def _with_base(data: dict[str, Any], where: str) -> dict[str, Any]:
    """``data`` merged over its ``base`` (a shipped definition, which may have a base too)."""
    base = data.pop("base", None)
    if base is None:
        return data
    if base not in builtin_names():
        raise ConfigError(f"challenge definition {where}: base {base!r} is not a shipped "
                          f"preset {builtin_names()}")
    inherited = _with_base(_read_toml(_builtin_path(base), base), base)
    # a table merges key by key (``[lesions]`` with only ``iou_threshold``), an array and
    # every other item replace the base's
    if isinstance(inherited.get("lesions"), dict) and isinstance(data.get("lesions"), dict):
        data["lesions"] = {**inherited["lesions"], **data["lesions"]}
    return {**inherited, **data}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # a JSON string is a TOML basic string


def to_toml(preset: Preset) -> str:
    """The definition file of ``preset``: :func:`load_definition` reads it back equal."""
    data = preset.describe()
    lines = [f"# content_sha256 = {data.pop('content_sha256')}"]
    for key in _ITEMS:
        if data.get(key) is not None:
            lines.append(f"{key} = {_toml_value(data[key])}")
    if data["lesions"] is not None:
        lines += ["", "[lesions]", *(f"{k} = {_toml_value(v)}" for k, v in data["lesions"].items())]
    for table in data["classes"]:
        lines += ["", "[[classes]]", *(f"{k} = {_toml_value(v)}" for k, v in table.items())]
    for table in data["ranking_metrics"]:
        lines += ["", "[[ranking_metrics]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()
                  if v is not None and not (k == "floor" and table["name"] == "runtime")]
    return "\n".join(lines) + "\n"
