"""The names of the metrics `evaluate()` returns: the one source for the trainer, the sweep spec,
the report and the tracker. Pure Python, so configs can be checked without numpy or faiss.

Names never contain '@' (MLflow rejects it): ``recall_at_{K}`` for each K, ``map_at_r``,
``r_precision``, and with clustering ``nmi`` and ``f1``.
"""
from __future__ import annotations

import re
from typing import Iterable, Literal, Sequence

from dml_core.errors import did_you_mean

RETRIEVAL = ("map_at_r", "r_precision")
CLUSTERING = ("nmi", "f1")
_RECALL = re.compile(r"recall_at_(\d+)")


def recall_name(k: int) -> str:
    return f"recall_at_{k}"


def metric_names(recall_at: Sequence[int], clustering: bool = True) -> tuple[str, ...]:
    """What `evaluate(..., k=recall_at, clustering=clustering)` returns, in its order."""
    return (*(recall_name(k) for k in recall_at), *RETRIEVAL, *(CLUSTERING if clustering else ()))


def recall_k(name: str) -> int | None:
    """K of a ``recall_at_K`` name, else None."""
    m = _RECALL.fullmatch(name)
    return int(m.group(1)) if m else None


def looks_like_metric(name: str) -> bool:
    """Whether `name` is a metric `evaluate` can return for some configuration (or `loss`)."""
    return name == "loss" or name in RETRIEVAL or name in CLUSTERING or recall_k(name) is not None


def direction(name: str) -> Literal["max", "min"]:
    """Which way `name` improves: the trainer's `loss` is minimised, every evaluation metric
    (Recall@K, MAP@R, R-precision, NMI, F1) maximised. The one place a metric's direction is
    written: the trainer's best epoch, the search and the report's verdicts all read it."""
    return "min" if name == "loss" else "max"


def sign(mode: str) -> int:
    """+1 where higher is better (`mode` "max"), -1 where lower is: score * sign ranks best first
    when sorted descending."""
    return 1 if mode == "max" else -1


def check_mode(metric: str, mode: str | None, field: str) -> Literal["max", "min"]:
    """`mode` if it agrees with `metric`'s direction (None: that direction), else `ValueError`."""
    natural = direction(metric)
    if mode is not None and mode != natural:
        better = "lower" if natural == "min" else "higher"
        raise ValueError(f"{field}: {mode} contradicts {metric}, which is {natural}imised ({better} is better); "
                         "drop the mode")
    return natural


def check_metric_name(name: str, available: Iterable[str], field: str) -> str:
    """Raise `ValueError` naming `field` unless `name` is among `available`."""
    available = list(available)
    if name not in available:
        raise ValueError(f"{field}: {name!r} is not reported by this run{did_you_mean(name, available)}; "
                         f"it reports {available}")
    return name


def ordered(names: Iterable[str]) -> list[str]:
    """Recall@K by K, then the other retrieval and clustering metrics, the trainer's `loss` and
    `time_s`, then anything else alphabetically (the report's column order)."""
    names = set(names)
    recalls = sorted((n for n in names if recall_k(n) is not None), key=lambda n: recall_k(n))
    known = [n for n in (*RETRIEVAL, *CLUSTERING, "loss", "time_s") if n in names]
    return recalls + known + sorted(names - set(recalls) - set(known))
