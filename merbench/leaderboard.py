"""Leaderboard tables from the results store and leaderboard/published.toml.

Reproduced rows (from runs in the store) and reported rows (published numbers, with their
citations) are kept apart: the ``source`` column says which, and they are never averaged.
Several seeds of one method and parameter set become one row, mean ± std over seeds.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.resources
import io
import json
import tomllib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .atomic import write_text
from .errors import ConfigError, DataError
from .protocols import load_protocol
from .runner import stored_report
from .store import Store

FORMATS = ("md", "csv", "latex", "json", "html")


def published(protocol: str | None = None, path: str | Path | None = None) -> list[dict[str, Any]]:
    """Reported numbers from published.toml, each with its citation."""
    if path is None:
        path = Path(str(importlib.resources.files("merbench_leaderboard"))) / "published.toml"
    data = tomllib.loads(Path(path).read_text())
    rows = []
    for r in data.get("result", []):
        if protocol and r["protocol"] != protocol:
            continue
        if not r.get("citation"):
            raise DataError(f"{path}: reported row {r.get('method')!r} has no citation")
        rows.append({"protocol": r["protocol"], "method": r["method"], "source": "reported",
                     "seeds": None, "UF1": r.get("uf1"), "UAR": r.get("uar"),
                     "accuracy": r.get("accuracy"), "per_dataset": r.get("per_dataset", {}),
                     "citation": r["citation"], "note": r.get("note", ""), "runs": []})
    return rows


def _mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    vals = np.array([v for v in values if v is not None and not np.isnan(v)], dtype=np.float64)
    if not vals.size:
        return {"mean": None, "std": None}
    return {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if vals.size > 1 else 0.0}


def reproduced(store: Store, protocol: str | None = None) -> list[dict[str, Any]]:
    """One row per (protocol, method, parameters): the latest finished run of each seed."""
    groups: dict[tuple[str, str, str], dict[int, Any]] = {}
    for rec in store.runs(protocol=None, status="finished"):
        name = rec.info.get("protocol_name", rec.protocol)
        if protocol and name != protocol or rec.info.get("partial"):
            continue  # a smoke run (--limit-folds, --subjects) is never a result
        blob = json.dumps({"p": rec.params, "i": rec.info.get("inputs"),
                           "c": rec.info.get("checkpoints"),
                           "d": rec.info.get("dataset_params"),
                           "s": rec.info.get("skip_bad", False)}, sort_keys=True)
        key = (rec.protocol, rec.method, hashlib.sha256(blob.encode()).hexdigest()[:8])
        groups.setdefault(key, {})[rec.seed] = rec  # later runs of a seed replace earlier ones
    rows = []
    variants: dict[tuple[str, str], int] = {}
    for (proto_label, method, _), _seeds in groups.items():
        variants[(proto_label, method)] = variants.get((proto_label, method), 0) + 1
    for (proto_label, method, phash), by_seed in sorted(groups.items()):
        reports = [stored_report(store, rec)[0] for rec in by_seed.values()]
        pooled = [r["pooled"] for r in reports]
        per_dataset: dict[str, Any] = {}
        for r in reports:
            for d, s in r.get("per_dataset", {}).items():
                per_dataset.setdefault(d, []).append(s)
        first = next(iter(by_seed.values()))
        changed = _changed_params(method, first.params)
        label = f"{method} ({changed})" if changed else method
        if variants[(proto_label, method)] > 1 and not changed:
            label = f"{method} [{phash}]"
        if not first.info.get("trained", True):
            label += " (published weights)"
        skipped = max(len(rec.info.get("skipped") or {}) for rec in by_seed.values())
        if skipped:
            label += f" ({skipped} samples skipped)"
        rows.append({
            "protocol": proto_label, "method": label, "source": "reproduced",
            "seeds": sorted(by_seed),
            "UF1": _mean_std([s.uf1 for s in pooled]), "UAR": _mean_std([s.uar for s in pooled]),
            "accuracy": _mean_std([s.accuracy for s in pooled]),
            "per_dataset": {d: {"UF1": _mean_std([s.uf1 for s in ss]),
                                "UAR": _mean_std([s.uar for s in ss])}
                            for d, ss in sorted(per_dataset.items())},
            "fold_mean_std": reports[-1]["fold_mean_std"],
            "runs": [rec.id for rec in by_seed.values()], "params": first.params,
            "citation": "", "note": "",
        })
    return rows


def _changed_params(method: str, params: dict[str, Any]) -> str:
    """The parameters a run set away from the method's defaults, e.g. ``model.epochs=100``."""
    from .methods import Method

    try:
        defaults = Method.named(method, {}).params()
    except Exception:  # noqa: BLE001 - a method no longer installed: show no difference
        return ""
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if defaults.get(k) != v)


def leaderboard_rows(store: Store | None, protocol: str | None = None,
                     include_published: bool = True) -> list[dict[str, Any]]:
    if protocol:
        load_protocol(protocol)  # unknown names fail here, clearly
    rows = reproduced(store, protocol) if store is not None else []
    if include_published:
        rows += published(protocol)
    rows.sort(key=lambda r: (r["protocol"], r["source"] != "reproduced",
                             -(_value(r["UF1"]) or 0)))
    return rows


def _value(x: Any) -> float | None:
    return x["mean"] if isinstance(x, dict) else x


def _fmt(x: Any, seeds: Sequence[int] | None) -> str:
    if isinstance(x, dict):
        if x["mean"] is None:
            return "undefined"
        return f"{x['mean']:.4f}" if not seeds or len(seeds) < 2 else \
            f"{x['mean']:.4f} ± {x['std']:.4f}"
    return "" if x is None else f"{x:.4f}"


def render(rows: list[dict[str, Any]], fmt: str = "md") -> str:
    """Tables (one per protocol) in md / csv / latex / html, or all rows as json."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    from tabulate import tabulate

    out = []
    for proto in sorted({r["protocol"] for r in rows}):
        prows = [r for r in rows if r["protocol"] == proto]
        datasets = sorted({d for r in prows for d in r["per_dataset"]})
        header = ["method", "source", "seeds", "UF1", "UAR", "accuracy"]
        header += [f"{d} {m}" for d in datasets for m in ("UF1", "UAR")]
        body = []
        for r in prows:
            seeds = r["seeds"]
            line = [r["method"], r["source"], len(seeds) if seeds else "",
                    _fmt(r["UF1"], seeds), _fmt(r["UAR"], seeds), _fmt(r["accuracy"], seeds)]
            for d in datasets:
                pd = r["per_dataset"].get(d, {})
                line += [_fmt(pd.get("UF1"), seeds), _fmt(pd.get("UAR"), seeds)]
            body.append(line)
        if fmt == "csv":
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["protocol"] + header)
            w.writerows([[proto] + b for b in body])
            out.append(buf.getvalue().strip())
            continue
        table_fmt = {"md": "github", "latex": "latex_booktabs", "html": "html"}[fmt]
        table = tabulate(body, headers=header, tablefmt=table_fmt, disable_numparse=True)
        notes = [f"- {r['method']}: {r['citation']}" + (f" ({r['note']})" if r["note"] else "")
                 for r in prows if r["source"] == "reported"]
        if fmt == "md":
            title = f"### {proto}\n\nHeadline UF1/UAR pooled over folds (MEGC2019 definition)."
            out.append("\n\n".join([title, table] + (["Reported rows:\n" + "\n".join(notes)]
                                                     if notes else [])))
        elif fmt == "html":
            out.append(f"<h3>{proto}</h3>\n{table}")
        else:
            out.append(f"% {proto}\n{table}")
    return "\n\n".join(out) + "\n"


def write_tables(rows: list[dict[str, Any]], directory: str | Path, stem: str) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, ext in (("md", "md"), ("csv", "csv"), ("latex", "tex"), ("json", "json"),
                     ("html", "html")):
        path = directory / f"{stem}.{ext}"
        write_text(path, render(rows, fmt))
        paths.append(path)
    return paths
