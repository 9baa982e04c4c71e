"""One-parameter ablations (``merbench sweep``): runs in the store, a table and a figure.

Each value of the swept parameter (× each seed) is an ordinary run through
:func:`merbench.runner.run`, so it is stored, resumable and reused like ``merbench run``; the
figure shows pooled UF1 and UAR against the value with their subject-level bootstrap intervals
(e.g. the founding paper's N_key curve: ``--set ars.n_key=1,3,5,7,9``).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .atomic import write_text
from .errors import ConfigError
from .explain import new_figure, safe_stem, save_figure
from .leaderboard import esc_csv, esc_md, run_predictions
from .stats import DEFAULT_BOOT, DEFAULT_LEVEL, cluster_bootstrap
from .store import DEFAULT_STORE, Store


def split_values(text: str, key: str | None = None) -> list[str]:
    """``1,3,5`` -> ['1', '3', '5']; commas inside brackets or quotes stay (``(1,1),(3,3)``,
    ``'a,b'``). ``key`` (the --set key) names the option in the error of an empty value."""
    out, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    if any(v == "" for v in out):
        if key is not None:
            raise ConfigError(f"--set {key}={text} has an empty value", "write KEY=V1,V2,...")
        raise ConfigError(f"--set value list {text!r} has an empty value", "e.g. ars.n_key=1,3,5")
    return out


def parse_sweep(sets: Mapping[str, str]) -> tuple[str, list[str], dict[str, str]]:
    """The one swept key (a comma-separated list) and the fixed overrides."""
    values_of = {k: split_values(v) for k, v in sets.items()}
    swept = {k: v for k, v in values_of.items() if len(v) > 1}
    if len(swept) != 1:
        raise ConfigError(f"a sweep varies exactly one parameter, got {len(swept)}"
                          + (f" ({', '.join(swept)})" if swept else ""),
                          "give one --set KEY=v1,v2,v3; other --set options take one value")
    key, values = next(iter(swept.items()))
    if len(set(values)) != len(values):
        raise ConfigError(f"--set {key}: a value is repeated in {sets[key]!r}")
    return key, values, {k: v for k, v in sets.items() if k != key}


def sweep(protocol: str, method: str, key: str, values: Sequence[str],
          fixed: Mapping[str, Any] | None = None, seed: int = 0, seeds: int = 1,
          output: str | Path | None = None, store: str | Path | Store | None = None,
          n_boot: int = DEFAULT_BOOT, boot_seed: int = 0, level: float = DEFAULT_LEVEL,
          echo: Callable[[str], None] = lambda s: None, **run_kwargs: Any) -> dict[str, Any]:
    """Run ``method`` for every value of ``key`` (and ``seeds`` seeds from ``seed``), then write
    ``sweep_<method>_<key>.{svg,md,csv,json}`` into ``output``. Returns the table and paths."""
    from .methods import parse_value
    from .runner import run

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, not {seeds}")
    st = store if isinstance(store, Store) else Store(store or DEFAULT_STORE)
    points = []
    for text in values:
        overrides = {**(fixed or {}), key: parse_value(text) if isinstance(text, str) else text}
        results = [run(protocol=protocol, method=method, overrides=overrides, seed=seed + k,
                       store=st, **run_kwargs) for k in range(seeds)]
        classes = list(results[0].protocol.classes)
        uf1 = [r.uf1 for r in results]
        uar = [r.uar for r in results]
        ci = cluster_bootstrap([run_predictions(st, r.run_id) for r in results], classes,
                               n_boot, boot_seed, level) if n_boot else None
        point = {"value": text, "UF1": float(np.mean(uf1)), "UAR": float(np.mean(uar)),
                 "UF1 std": float(np.std(uf1, ddof=1)) if len(uf1) > 1 else 0.0,
                 "UAR std": float(np.std(uar, ddof=1)) if len(uar) > 1 else 0.0,
                 "CI": ci, "runs": [r.run_id for r in results],
                 "seeds": [r.seed for r in results]}
        points.append(point)
        shown = "" if ci is None else (f" [{ci['UF1'][0]:.4f}, {ci['UF1'][1]:.4f}]")
        echo(f"{key}={text}: UF1 {point['UF1']:.4f}{shown}  UAR {point['UAR']:.4f}  "
             f"(runs {', '.join(point['runs'])})")
    out: dict[str, Any] = {"protocol": protocol, "method": method, "key": key,
                           "fixed": dict(fixed or {}), "points": points, "paths": []}
    if output is not None:
        out["paths"] = write_sweep(out, Path(output), level)
    return out


def _numeric(values: Sequence[str]) -> list[float] | None:
    from .methods import parse_value

    parsed = [parse_value(v) for v in values]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in parsed):
        return [float(v) for v in parsed]
    return None


def sweep_figure(result: dict[str, Any], path: Path, level: float = DEFAULT_LEVEL) -> Path:
    """UF1 and UAR against the swept value, with the bootstrap intervals as error bars."""
    points = result["points"]
    labels = [p["value"] for p in points]
    xs = _numeric(labels)
    x = np.array(xs if xs is not None else range(len(points)), dtype=float)
    fig = new_figure(5.6, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for k, (metric, marker) in enumerate((("UF1", "o"), ("UAR", "s"))):
        y = np.array([p[metric] for p in points])
        lo = np.array([(p["CI"] or {}).get(metric, [v, v])[0] if p["CI"] else v
                       for p, v in zip(points, y)])
        hi = np.array([(p["CI"] or {}).get(metric, [v, v])[1] if p["CI"] else v
                       for p, v in zip(points, y)])
        offset = (k - 0.5) * 0.04 * (np.ptp(x) or 1)  # keep the two bars apart
        ax.errorbar(x + offset, y, yerr=[y - lo, hi - y], marker=marker, capsize=3,
                    label=metric)
    ax.set_xticks(x, labels)
    ax.set_xlabel(result["key"])
    ax.set_ylabel("pooled score")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ci = any(p["CI"] for p in points)
    ax.set_title(f"{result['method']} on {result['protocol']}"
                 + (f" ({round(100 * level)}% subject bootstrap)" if ci else ""), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, metadata={"Date": None} if path.suffix == ".svg" else None)


def sweep_table(result: dict[str, Any], fmt: str = "md") -> str:
    key = result["key"]
    rows = []
    for p in result["points"]:
        ci = p["CI"] or {}
        rows.append([p["value"], len(p["seeds"]), f"{p['UF1']:.4f}",
                     "" if not ci else f"[{ci['UF1'][0]:.4f}, {ci['UF1'][1]:.4f}]",
                     f"{p['UAR']:.4f}",
                     "" if not ci else f"[{ci['UAR'][0]:.4f}, {ci['UAR'][1]:.4f}]",
                     " ".join(p["runs"])])
    header = [key, "seeds", "UF1", "UF1 CI", "UAR", "UAR CI", "runs"]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([esc_csv(h) for h in header])
        w.writerows([[esc_csv(r[0])] + r[1:] for r in rows])
        return buf.getvalue()
    from tabulate import tabulate

    return (f"### {esc_md(result['method'])}: {esc_md(key)} on {esc_md(result['protocol'])}\n\n"
            + tabulate([[esc_md(r[0])] + r[1:] for r in rows], headers=[esc_md(h) for h in header],
                       tablefmt="github", disable_numparse=True) + "\n")


def write_sweep(result: dict[str, Any], directory: Path, level: float = DEFAULT_LEVEL
                ) -> list[Path]:
    stem = f"sweep_{safe_stem(result['method'])}_{safe_stem(result['key'])}"
    paths = [sweep_figure(result, directory / f"{stem}.svg", level),
             sweep_figure(result, directory / f"{stem}.png", level),
             write_text(directory / f"{stem}.md", sweep_table(result, "md")),
             write_text(directory / f"{stem}.csv", sweep_table(result, "csv"))]
    data = {k: v for k, v in result.items() if k != "paths"}
    paths.append(write_text(directory / f"{stem}.json", json.dumps(data, indent=2, default=str)))
    return paths
