"""The static leaderboard site (``merbench site`` / ``leaderboard --format site``).

A folder of self-contained pages that works from ``file://`` and needs no network: CSS and the
few lines of JavaScript (sortable tables) are inline, figures are SVG files beside the pages,
and a Content-Security-Policy allows nothing else (no remote fetch, no inline event handler: an
injected ``onerror=`` would not run even if escaping failed). Layout::

    index.html                    every protocol with its best rows
    protocol/<name>.html          one sortable table per protocol
    run/<run id>/index.html       one page per reproduced run: provenance, folds, classes,
                                  confusion.svg, predictions.csv, run.json, reproduce command
    leaderboard.json              the same data for other tools

Every string from the store or published.toml is HTML-escaped; every file is written atomically.
"""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .atomic import write_text
from .explain import new_figure, safe_stem, save_figure
from .leaderboard import (METRIC_DEFINITION, _by_protocol, _datasets, _level, _value,
                          changed_params, esc_html, fmt_interval, fmt_value, leaderboard_rows,
                          quality, flags, reproduce_command, row_marks,
                          run_predictions)
from .stats import DEFAULT_BOOT, DEFAULT_LEVEL, cluster_bootstrap
from .store import RunRecord, Store, now

CSS = """
:root{--fg:#1d232b;--muted:#5c6670;--line:#d9dee3;--head:#f2f4f6;--rep:#fff8e6;--repb:#e0a800;
--link:#0b5cad;--bad:#b3261e;--warn:#8a5a00;--ok:#1e6b34}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
margin:0 auto;max-width:1400px;padding:1.5rem 2rem 3rem}
a{color:var(--link)}
h1{font-size:1.6rem;margin:.2rem 0 .3rem}h2{font-size:1.2rem;margin:1.8rem 0 .5rem}
nav{font-size:.9rem;color:var(--muted)}
p.lead,.note{color:var(--muted)}.note{font-size:.88rem}
table{border-collapse:collapse;margin:.4rem 0 1rem;font-size:.9rem}
th,td{border-bottom:1px solid var(--line);padding:.32rem .6rem;text-align:left;vertical-align:top}
th{background:var(--head);font-weight:600;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.sortable th{cursor:pointer;user-select:none}
table.board td:nth-child(2){white-space:nowrap}
.scroll{overflow-x:auto;max-width:100%}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2";font-size:.7em}
table.sortable th[aria-sort=descending]::after{content:" \\25BC";font-size:.7em}
tr.reported td{background:var(--rep);font-style:italic}
tr.reported td:first-child{box-shadow:inset 3px 0 var(--repb)}
.flag{display:inline-block;border-radius:3px;padding:0 .35rem;margin:0 .2rem .1rem 0;
font-size:.78rem;font-style:normal;border:1px solid currentColor;white-space:nowrap}
.flag.bad{color:var(--bad)}.flag.warn{color:var(--warn)}.flag.info{color:var(--muted)}
.flag.ok{color:var(--ok)}
pre{background:var(--head);padding:.7rem .9rem;white-space:pre-wrap;word-break:break-all;border-radius:4px;font-size:.85rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;font-size:.9rem}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;word-break:break-all}
figure{margin:.5rem 0}figure img{max-width:100%;height:auto}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:1rem}
.card{border:1px solid var(--line);border-radius:6px;padding:.6rem 1rem}
.card h2{margin:.2rem 0 .4rem}
"""

JS = """
(function () {
  function key(cell) {
    var v = cell.getAttribute("data-v");
    if (v === null) { return cell.textContent.trim().toLowerCase(); }
    return v === "" ? null : parseFloat(v);
  }
  function sortBy(table, th, col) {
    var asc = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(th.parentNode.cells, function (c) {
      c.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var d = (typeof x === "number" && typeof y === "number") ? x - y
        : String(x).localeCompare(String(y));
      return asc ? d : -d;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort by " + th.textContent.trim();
      th.addEventListener("click", function () { sortBy(table, th, col); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th, col); }
      });
    });
  });
})();
"""

_JS_HASH = base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' file: data:; "
       f"script-src 'sha256-{_JS_HASH}'; base-uri 'none'; form-action 'none'")

_BAD = ("partial", "leaks identity")
_INFO = ("published weights", "precomputed inputs")


def page(title: str, body: str, root: str = "") -> str:
    """A complete HTML document; ``root`` is the relative path back to the site's top."""
    nav = (f'<nav><a href="{root}index.html">merbench leaderboards</a> · '
           f'<a href="{root}leaderboard.json">leaderboard.json</a></nav>') if root is not None \
        else ""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc_html(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{nav}\n"
            f"{body}\n<script>{JS}</script>\n</body>\n</html>\n")


def _flag_html(text: str) -> str:
    kind = "bad" if text.startswith(_BAD) else "info" if text in _INFO else \
        "ok" if text.startswith(("≈ best", "best reproduced")) else "warn"
    return f'<span class="flag {kind}">{esc_html(text)}</span>'


def _td_num(value: float | None, text: str | None = None) -> str:
    v = "" if value is None else f"{value:.6f}"
    shown = text if text is not None else ("" if value is None else f"{value:.4f}")
    return f'<td class="num" data-v="{v}">{esc_html(shown)}</td>'


def protocol_table(rows: Sequence[dict[str, Any]], interval: str = "bracket",
                   run_href: Callable[[str], str] | None = None) -> str:
    """One protocol's rows as a sortable table (click a header), citations listed below."""
    datasets = _datasets(rows)
    pct, _ = _level(rows)
    heads = ["#", "Method", "Source", "Seeds", "UF1", f"UF1 {pct}% CI", "UAR", f"UAR {pct}% CI",
             "Accuracy"] + [f"{d} {m}" for d in datasets for m in ("UF1", "UAR")] + ["Flags"]
    cites = [r for r in rows if r["source"] == "reported"]
    body = []
    for rank, r in enumerate(rows, 1):
        seeds = r["seeds"] or []
        method = esc_html(r["method"])
        if run_href and r["runs"]:
            method = f'<a class="run-link" href="{esc_html(run_href(r["runs"][0]))}">{method}</a>'
        if r["source"] == "reported":
            k = cites.index(r) + 1
            source = (f'reported <a href="#cite-{k}" title="{esc_html(r["citation"])}">'
                      f"[{k}]</a>")
        else:
            source = "reproduced"
        if run_href and len(r["runs"]) > 1:
            seed_cell = " ".join(f'<a class="run-link" href="{esc_html(run_href(rid))}">{s}</a>'
                                 for s, rid in zip(seeds, r["runs"]))
        else:
            seed_cell = str(len(seeds)) if seeds else ""
        cells = [f'<td class="num" data-v="{rank}">{rank}</td>', f"<td>{method}</td>",
                 f"<td>{source}</td>", f'<td class="num" data-v="{len(seeds) or ""}">{seed_cell}'
                 "</td>"]
        for m in ("UF1", "UAR"):
            ci = (r.get("CI") or {}).get(m)
            cells.append(_td_num(_value(r[m]), fmt_value(r[m], seeds)))
            cells.append(_td_num(ci[0] if ci else None, fmt_interval(r, m, interval)))
        cells.append(_td_num(_value(r["accuracy"]), fmt_value(r["accuracy"], seeds)))
        for d in datasets:
            for m in ("UF1", "UAR"):
                v = r["per_dataset"].get(d, {}).get(m)
                cells.append(_td_num(_value(v), fmt_value(v, seeds)))
        cells.append("<td>" + "".join(_flag_html(f) for f in row_marks(r)) + "</td>")
        cls = ' class="reported"' if r["source"] == "reported" else ""
        body.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{esc_html(h)}</th>" for h in heads)
    table = (f'<div class="scroll"><table class="sortable board">\n<thead><tr>{head}</tr>'
             "</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table></div>")
    if cites:
        table += '\n<ol class="cites note">' + "".join(
            f'<li id="cite-{k}">{esc_html(r["method"])}: {esc_html(r["citation"])}'
            + (f" ({esc_html(r['note'])})" if r["note"] else "") + "</li>"
            for k, r in enumerate(cites, 1)) + "</ol>"
    return table


def _explanation(rows: Sequence[dict[str, Any]]) -> str:
    pct, n_boot = _level(rows)
    ci = (f" The {pct}% interval comes from a subject-level (cluster) bootstrap of the pooled "
          f"metric (B={n_boot}): subjects, not samples, are resampled." if n_boot else "")
    return (f'<p class="note">Headline: {esc_html(METRIC_DEFINITION)}. Reproduced rows show '
            f"mean ± std over seeds.{ci} Reported rows (shaded) are numbers printed in the cited "
            "papers, never recomputed. <em>≈ best</em>: not significantly different from the "
            f"best reproduced row (paired subject bootstrap of ΔUF1, p ≥ {1 - pct / 100:.2f}). "
            "Click a column header to sort.</p>")


def standalone_tables(rows: list[dict[str, Any]], interval: str = "bracket") -> str:
    """``--format html``: every protocol's table on one self-contained page."""
    parts = ["<h1>merbench leaderboard</h1>"]
    for proto, prows in _by_protocol(rows):
        parts.append(f"<h2>{esc_html(proto)}</h2>\n{protocol_table(prows, interval)}")
    parts.append(_explanation(rows))
    return page("merbench leaderboard", "\n".join(parts), root=None)


# -- run pages -----------------------------------------------------------------------------------
def confusion_figure(path: Path, confusion: np.ndarray, labels: Sequence[str], title: str) -> Path:
    """Counts and row-normalised confusion matrices side by side, as an SVG (or PNG)."""
    cm = np.asarray(confusion, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = cm / cm.sum(axis=1, keepdims=True)
    n = len(labels)
    side = 1.2 + 0.6 * n
    fig = new_figure(2 * side + 0.8, side + 0.6)
    for ax, matrix, name in zip(fig.subplots(1, 2), (cm, norm), ("counts", "row-normalised")):
        shown = np.nan_to_num(matrix.astype(float))
        ax.imshow(shown, cmap="Blues", vmin=0, vmax=max(shown.max(), 1e-9) if name == "counts"
                  else 1)
        ax.set_xticks(range(n), [str(c) for c in labels], rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(n), [str(c) for c in labels], fontsize=8)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(name, fontsize=9)
        top = shown.max() or 1
        for (i, j), v in np.ndenumerate(matrix):
            text = str(int(v)) if name == "counts" else ("–" if np.isnan(v) else f"{v:.2f}")
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > 0.6 * (top if name == "counts" else 1)
                    else "black")
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.14, right=0.98, bottom=0.24, top=0.84, wspace=0.45)
    return save_figure(fig, path, metadata={"Date": None} if path.suffix == ".svg" else None)


def predictions_csv(store: Store, run_id: str) -> str:
    """A run's predictions in the ``merbench score`` CSV format (id, fold, gt, pred) plus the
    class probabilities."""
    import csv
    import io

    from .leaderboard import esc_csv

    preds = store.predictions(run_id)
    classes = list(store.run(run_id).info["classes"])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "fold", "gt", "pred"] + [esc_csv(f"p_{c}") for c in classes])
    for p in preds:
        w.writerow([esc_csv(p.sample_id), esc_csv(p.fold), esc_csv(p.y_true), esc_csv(p.y_pred)]
                   + [f"{p.proba.get(c, 0.0):.6f}" for c in classes])
    return buf.getvalue()


def _facts(items: Sequence[tuple[str, Any]]) -> str:
    return '<dl class="facts">' + "".join(
        f"<dt>{esc_html(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _fmt(x: Any) -> str:
    return "undefined" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.4f}"


def run_page(store: Store, rec: RunRecord, out: Path, n_boot: int, boot_seed: int,
             level: float) -> dict[str, Any]:
    """Write ``out/index.html`` with its figure and downloads; returns the run's summary."""
    from .metrics import report_to_dict
    from .runner import stored_report

    rep, _ = stored_report(store, rec)
    pooled = rep["pooled"]
    classes = list(rec.info["classes"])
    ci = cluster_bootstrap(run_predictions(store, rec.id), classes, n_boot, boot_seed, level) \
        if n_boot else None
    q = quality(store, [rec])
    proto = rec.info.get("protocol_name", rec.protocol)
    title = f"{rec.method} on {rec.protocol}, seed {rec.seed}"
    confusion_figure(out / "confusion.svg", pooled.confusion, classes,
                     f"{rec.method} on {rec.protocol} (seed {rec.seed}), pooled over folds")
    write_text(out / "predictions.csv", predictions_csv(store, rec.id))
    command = reproduce_command(rec)
    summary = {"id": rec.id, "protocol": rec.protocol, "protocol_name": proto,
               "method": rec.method, "seed": rec.seed, "params": rec.params,
               "changed": changed_params(rec.method, rec.params), "versions": rec.versions,
               "git_commit": rec.git_commit, "device": rec.device, "host": rec.host,
               "started": rec.started, "ended": rec.ended, "status": rec.status,
               "info": rec.info, "quality": q, "flags": flags(q), "CI": ci,
               "command": command, "report": report_to_dict(rep),
               "page": f"run/{safe_stem(rec.id)}/index.html"}
    write_text(out / "run.json", json.dumps(summary, indent=2, default=str))

    pct = round(100 * level)
    ci_text = (lambda m: f" [{ci[m][0]:.4f}, {ci[m][1]:.4f}]" if ci and ci[m] else "")
    parts = [f"<h1>{esc_html(rec.method)}</h1>",
             f'<p class="lead">{esc_html(rec.protocol)} · seed {rec.seed} · run '
             f"<code>{esc_html(rec.id)}</code> · {esc_html(rec.status)}</p>"]
    if summary["flags"]:
        parts.append("<p>" + "".join(_flag_html(f) for f in summary["flags"]) + "</p>")
    fm = rep["fold_mean_std"]
    rows = [("pooled (headline)", pooled.n, _fmt(pooled.uf1) + ci_text("UF1"),
             _fmt(pooled.uar) + ci_text("UAR"), _fmt(pooled.accuracy))]
    for d, s in rep.get("per_dataset", {}).items():
        rows.append((d, s.n, _fmt(s.uf1), _fmt(s.uar), _fmt(s.accuracy)))
    if fm["uf1"]["mean"] is not None:
        rows.append((f"per-fold mean ± std ({fm['uf1']['folds']} folds)", "",
                     f"{fm['uf1']['mean']:.4f} ± {fm['uf1']['std']:.4f}",
                     f"{fm['uar']['mean']:.4f} ± {fm['uar']['std']:.4f}",
                     f"{fm['accuracy']['mean']:.4f} ± {fm['accuracy']['std']:.4f}"))
    parts.append("<h2>Scores</h2>" + _simple_table(
        ["", "n", f"UF1 (pooled{f', {pct}% CI' if ci else ''})",
         f"UAR (pooled{f', {pct}% CI' if ci else ''})", "accuracy"], rows))
    if ci:
        parts.append(f'<p class="note">{esc_html(METRIC_DEFINITION)}. Interval: subject-level '
                     f"bootstrap over {ci['subjects']} subjects, B={ci['n_boot']}, seed "
                     f"{ci['seed']}.</p>")
    parts.append("<h2>Reproduce</h2><pre><code>" + esc_html(command) + "</code></pre>")
    parts.append('<p><a download href="predictions.csv">predictions.csv</a> (the <code>merbench '
                 'score</code> format: id, fold, gt, pred, class probabilities) · '
                 '<a download href="run.json">run.json</a> (everything on this page)</p>')

    parts.append("<h2>Confusion matrix</h2>"
                 f'<figure><img id="confusion" src="confusion.svg" alt="confusion matrix of '
                 f'{esc_html(title)}: counts and row-normalised"></figure>')
    per_class = [(c, s, _fmt(p), _fmt(r), _fmt(f)) for c, p, r, f, s in
                 zip(pooled.labels, pooled.precision, pooled.recall, pooled.f1, pooled.support)]
    parts.append("<h2>Per class (pooled)</h2>" + _simple_table(
        ["class", "support", "precision", "recall", "F1"], per_class))
    if pooled.undefined:
        parts.append('<p class="note">Undefined (left out of the class means): ' + "; ".join(
            f"{esc_html(k)}: {esc_html(', '.join(v))}" for k, v in pooled.undefined.items())
            + "</p>")

    fold_info = store.fold_info(rec.id)
    index_of = {p.fold: p.fold_index for p in store.predictions(rec.id)}
    fold_rows = []
    for name, s in rep["per_fold"].items():
        info = fold_info.get(index_of.get(name, -1), {})
        fold_rows.append((name, s.n, _fmt(s.uf1), _fmt(s.uar), _fmt(s.accuracy),
                          "" if info.get("seconds") is None else f"{info['seconds']:.1f}",
                          "yes" if info.get("trained", True) else "no (published weights)"))
    parts.append("<h2>Folds</h2>" + _simple_table(
        ["fold", "n", "UF1", "UAR", "accuracy", "seconds", "trained"], fold_rows, sortable=True))

    info = rec.info
    quality_items = [("samples", f"{info.get('n_samples', pooled.n)} in the protocol, "
                                 f"{pooled.n} predicted"),
                     ("folds", f"{q['folds']} of {q['n_folds'] or '?'} stored"),
                     ("trained", "yes" if q["trained"] else "no: evaluated from published "
                                                          "weights"),
                     ("inputs", esc_html(info.get("inputs") or "computed from the videos")),
                     ("checkpoints", esc_html(info.get("checkpoints") or "none")),
                     ("leaks identity", "yes" if q["leaks_identity"] else "no"),
                     ("fallbacks", esc_html("; ".join(f"{k}: {v} samples" for k, v in
                                                      sorted(q["fallbacks"].items())) or "none")),
                     ("skipped samples", str(q["skipped"]))]
    for dname, root in sorted((info.get("data_roots") or {}).items()):
        quality_items.append((f"data root {dname}", esc_html(root)))
    parts.append("<h2>Data quality</h2>" + _facts(quality_items))
    skipped = info.get("skipped") or {}
    if skipped:
        parts.append(_simple_table(["skipped sample", "reason"], sorted(skipped.items())[:200]))

    versions = dict(rec.versions)
    plugins = versions.pop("plugins", {}) or {}
    prov = [("run id", esc_html(rec.id)), ("protocol", esc_html(rec.protocol)),
            ("method", esc_html(rec.method)), ("seed", str(rec.seed)),
            ("git commit", esc_html(rec.git_commit or "unknown")),
            ("device", esc_html(rec.device or "")), ("host", esc_html(rec.host or "")),
            ("started", esc_html(rec.started)), ("ended", esc_html(rec.ended or "")),
            ("run key", f"<code>{esc_html(rec.key)}</code>")]
    prov += [(f"version {k}", esc_html(v)) for k, v in sorted(versions.items())]
    prov += [(f"plugin {k}", esc_html(v)) for k, v in sorted(plugins.items())]
    parts.append("<h2>Provenance</h2>" + _facts(prov))
    changed = summary["changed"]
    params = [(("<strong>" + esc_html(k) + "</strong>") if k in changed else esc_html(k),
               esc_html(json.dumps(v))) for k, v in sorted(rec.params.items())]
    parts.append("<h2>Parameters</h2>" + _simple_table(["parameter", "value"], params,
                                                       escape=False)
                 + '<p class="note">Bold: set away from the method\'s defaults.</p>')
    write_text(out / "index.html", page(title, "\n".join(parts), root="../../"))
    return summary


def _simple_table(heads: Sequence[str], rows: Sequence[Sequence[Any]], sortable: bool = False,
                  escape: bool = True) -> str:
    cls = ' class="sortable"' if sortable else ""
    cell = (lambda v: esc_html(v)) if escape else str
    return (f"<table{cls}><thead><tr>" + "".join(f"<th>{esc_html(h)}</th>" for h in heads)
            + "</tr></thead><tbody>" + "".join(
                "<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
            + "</tbody></table>")


# -- the site ------------------------------------------------------------------------------------
def protocol_file(protocol: str) -> str:
    """``protocol/<stem>.html``; names that are not plain file names get a hash suffix."""
    stem = safe_stem(protocol)[:80]
    if stem != protocol:
        stem += "-" + hashlib.sha256(protocol.encode()).hexdigest()[:8]
    return f"protocol/{stem}.html"


def _description(name: str) -> str:
    from .protocols import describe, load_protocol

    try:
        return describe(load_protocol(name))
    except Exception:  # noqa: BLE001 - a protocol file no longer at hand: no description
        return ""


def write_site(store: Store | None, directory: str | Path, protocol: str | None = None,
               include_published: bool = True, n_boot: int = DEFAULT_BOOT, boot_seed: int = 0,
               level: float = DEFAULT_LEVEL, include_partial: bool = False,
               interval: str = "bracket") -> list[Path]:
    """Write the static site into ``directory``; returns the pages written (index first)."""
    directory = Path(directory)
    rows = leaderboard_rows(store, protocol, include_published, n_boot, boot_seed, level,
                            include_partial)
    runs: dict[str, Any] = {}
    if store is not None:
        for r in rows:
            for rid in r["runs"]:
                rec = store.run(rid)
                runs[rid] = run_page(store, rec, directory / "run" / safe_stem(rid), n_boot,
                                     boot_seed, level)
    paths = []
    cards = []
    for proto, prows in _by_protocol(rows):
        href = protocol_file(proto)
        name = prows[0].get("protocol_name", proto)
        desc = _description(name)
        body = [f"<h1>{esc_html(proto)}</h1>"]
        if desc:
            body.append(f'<p class="lead">{esc_html(desc)}</p>')
        body.append(protocol_table(prows, interval, lambda rid: f"../run/{safe_stem(rid)}/"
                                                               "index.html"))
        body.append(_explanation(prows))
        path = directory / href
        write_text(path, page(f"{proto}: merbench leaderboard", "\n".join(body), root="../"))
        paths.append(path)
        top = prows[:3]
        n_rep = sum(r["source"] == "reproduced" for r in prows)
        cards.append(
            f'<section class="card"><h2><a class="protocol-link" href="{esc_html(href)}">'
            f"{esc_html(proto)}</a></h2>"
            + (f'<p class="note">{esc_html(desc)}</p>' if desc else "")
            + _simple_table(["best rows", "source", "UF1", "UAR"],
                            [(r["method"], r["source"], fmt_value(r["UF1"], r["seeds"]),
                              fmt_value(r["UAR"], r["seeds"])) for r in top])
            + f'<p class="note">{n_rep} reproduced, {len(prows) - n_rep} reported rows</p>'
            "</section>")
    index = ["<h1>merbench leaderboards</h1>",
             '<p class="lead">Micro-expression recognition results under common, audited '
             "protocols: reproduced runs from the results store and numbers reported in papers, "
             "ranked together and always marked.</p>",
             '<div class="cards">' + "".join(cards) + "</div>" if cards else
             "<p>No results yet: run <code>merbench run</code> first.</p>",
             _explanation(rows), f'<p class="note">Generated {esc_html(now())}.</p>']
    index_path = directory / "index.html"
    write_text(index_path, page("merbench leaderboards", "\n".join(index), root=""))
    from . import __version__

    data = {"generated": now(), "merbench": __version__,
            "bootstrap": {"n_boot": n_boot, "seed": boot_seed, "level": level,
                          "unit": "subject"},
            "metric_definition": METRIC_DEFINITION,
            "protocols": {proto: protocol_file(proto) for proto, _ in _by_protocol(rows)},
            "rows": rows, "runs": runs}
    write_text(directory / "leaderboard.json", json.dumps(data, indent=2, default=str))
    return [index_path] + paths
