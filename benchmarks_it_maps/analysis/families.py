"""Model families: which models share an architecture lineage, so that their scores are not independent draws.

Leaderboard models come in families (38 MobileNets differing only in width and input size, 27 ResNets, six BiT-S
nets of one training recipe). A bootstrap that resamples models treats them as independent and makes intervals too
narrow; :mod:`benchmarks_it_maps.analysis.tradeoff` resamples families instead (a cluster bootstrap).

A model's family comes from, in this order:

1. a user table (CSV with columns ``model,family``; :func:`read_family_overrides`), exact model names;
2. the package table ``tables/model_families.csv``: ordered regular expressions on the lower-cased name, first match
   wins (an empty family means "its own family": anonymised submissions, whose lineage is unknown);
3. timm's own metadata for timm names (the module that defines the architecture, e.g. ``resnet``, ``efficientnet``);
4. else the model is its own family (an unknown lineage is not merged with anything).

Names shared by several leaderboard submissions carry a `` (#123)`` suffix; it is ignored.
"""
from __future__ import annotations

import csv
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd
from timm.models import _registry as timm_registry

#: The package's family rules (pattern, family, note).
TABLE = Path(__file__).resolve().parent / "tables" / "model_families.csv"
_SUFFIX = re.compile(r"\s*\(#\d+\)$")


class FamilyTableError(ValueError):
    """A family table (the package's or a user's CSV) cannot be read."""


@lru_cache(maxsize=4)
def family_rules(path: str | None = None) -> tuple[tuple[re.Pattern, str], ...]:
    """The ordered (compiled pattern, family) rules of a family table (default: the package's :data:`TABLE`)."""
    path = Path(path) if path else TABLE
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    rules = []
    for number, row in enumerate(rows, start=2):
        try:
            rules.append((re.compile(row["pattern"]), (row.get("family") or "").strip()))
        except (KeyError, TypeError, re.error) as error:
            raise FamilyTableError(f"{path}: line {number}: field 'pattern' is not a regular expression ({error})"
                                   ) from error
    return tuple(rules)


def base_name(model: str) -> str:
    """The model name without the leaderboard's `` (#id)`` disambiguation suffix."""
    return _SUFFIX.sub("", str(model)).strip()


def _timm_family(name: str) -> str | None:
    """timm's module for a timm model name (``resnet50.a1_in1k`` -> ``resnet``), None if timm does not know it."""
    architecture = name.split(".", 1)[0]
    return timm_registry._model_to_module.get(architecture)


def family_of(model: str, overrides: Mapping[str, str] | None = None) -> str:
    """The family of one model name (see the module docstring for the order of the sources)."""
    if overrides and model in overrides:
        return overrides[model]
    name = base_name(model)
    if overrides and name in overrides:
        return overrides[name]
    lower = name.lower()
    for pattern, family in family_rules():
        if pattern.search(lower):
            return family or f"anonymous:{name}"
    return _timm_family(lower) or name


def assign_families(models: Iterable[str], overrides: Mapping[str, str] | None = None) -> pd.Series:
    """Family per model name, as a Series indexed like the input order."""
    models = [str(model) for model in models]
    return pd.Series([family_of(model, overrides) for model in models], index=models, name="family")


def read_family_overrides(path: str | Path) -> dict[str, str]:
    """A user's family table: a CSV with columns ``model`` and ``family`` (one row per model; exact names).

    Raises :class:`FamilyTableError` naming the file, the line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FamilyTableError(f"family table {path} does not exist; give a CSV with columns model,family")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            fields = [field.strip() for field in (reader.fieldnames or [])]
            if "model" not in fields or "family" not in fields:
                raise FamilyTableError(f"family table {path}: header is {','.join(fields) or '(empty)'}; it needs "
                                       f"the columns model,family")
            overrides: dict[str, str] = {}
            for number, row in enumerate(reader, start=2):
                row = {(key or "").strip(): (value or "").strip() for key, value in row.items()
                       if isinstance(value, str)}
                model, family = row.get("model", ""), row.get("family", "")
                if not model or not family:
                    raise FamilyTableError(f"family table {path}: line {number}: fields 'model' and 'family' must "
                                           f"both be non-empty")
                if model in overrides and overrides[model] != family:
                    raise FamilyTableError(f"family table {path}: line {number}: model {model!r} is given two "
                                           f"families ({overrides[model]!r}, {family!r}); keep one row per model")
                overrides[model] = family
    except UnicodeDecodeError as error:
        raise FamilyTableError(f"family table {path} is not UTF-8 text ({error}); save it as a UTF-8 CSV") from error
    except csv.Error as error:
        raise FamilyTableError(f"family table {path} is not a CSV file ({error})") from error
    return overrides
