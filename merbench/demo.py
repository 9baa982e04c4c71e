"""``merbench demo``: the synthetic set, LOSO, several methods, the leaderboard, in minutes."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from .leaderboard import leaderboard_rows, render, write_tables
from .plugins import entries
from .store import Store

PROTOCOL = "synthetic-loso"
DEFAULT_STORE = Path("merbench-results") / "demo.sqlite"
PROGRESS_SECONDS = 10.0  # a long method reports its folds at most this often


def demo_methods() -> list[tuple[str, dict[str, Any]]]:
    """(method, overrides) of every registered method whose plugin put it in the demo (its
    MethodSpec's ``demo``), in name order."""
    return [(e.name, dict(e.factory.demo)) for e in entries("method")
            if getattr(e.factory, "demo", None) is not None]


def run_demo(store: str | Path | None = None, output: str | Path | None = None,
             workers: int | str = "auto", echo: Callable[[str], None] = lambda s: None) -> str:
    """Every demo method on the synthetic LOSO, one after the other on one set of workers,
    echoing a line as each method starts and ends (and, every few seconds, the folds done of
    a long one); returns the leaderboard table."""
    from .executors import make_executor
    from .runner import run

    st = Store(store or DEFAULT_STORE)
    methods = demo_methods()
    started = time.time()
    with make_executor(workers) as executor:  # one set of workers serves every method
        for k, (name, overrides) in enumerate(methods, 1):
            shown = name + "".join(f" {key}={value}" for key, value in overrides.items())
            echo(f"[{k}/{len(methods)}] {shown} ...")
            start = time.time()
            seen = {"folds": 0, "shown": start}

            def on_fold(fold: str, index: int, total: int) -> None:
                seen["folds"] += 1
                if time.time() - seen["shown"] >= PROGRESS_SECONDS:
                    seen["shown"] = time.time()
                    echo(f"      {seen['folds']}/{total} folds ({seen['shown'] - start:.0f} s)")

            result = run(protocol=PROTOCOL, method=name, overrides=overrides, store=st,
                         executor=executor, quiet=True, on_fold=on_fold)
            p = result.report["pooled"]
            echo(f"[{k}/{len(methods)}] {shown}: UF1 {p.uf1:.4f}  UAR {p.uar:.4f}  "
                 f"({time.time() - start:.1f} s, run {result.run_id})")
    echo(f"{len(methods)} methods in {time.time() - started:.0f} s")
    rows = leaderboard_rows(st, PROTOCOL)
    if output:
        for path in write_tables(rows, output, PROTOCOL):
            echo(f"wrote {path}")
    from .site import write_site

    site = Path(output) / "site" if output else Path(st.path).parent / "site"
    echo(f"wrote {write_site(st, site, PROTOCOL)[0]} (the leaderboard site; open it in a browser)")
    return render(rows, "md")
