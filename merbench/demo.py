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


def demo_methods() -> list[tuple[str, dict[str, Any]]]:
    """(method, overrides) of every registered method whose plugin put it in the demo (its
    MethodSpec's ``demo``), in name order."""
    return [(e.name, dict(e.factory.demo)) for e in entries("method")
            if getattr(e.factory, "demo", None) is not None]


def run_demo(store: str | Path | None = None, output: str | Path | None = None, workers: int = 2,
             echo: Callable[[str], None] = lambda s: None) -> str:
    from .executors import make_executor
    from .runner import run

    st = Store(store or DEFAULT_STORE)
    with make_executor(workers) as executor:  # one set of workers serves every method
        for name, overrides in demo_methods():
            start = time.time()
            result = run(protocol=PROTOCOL, method=name, overrides=overrides, store=st,
                         executor=executor, quiet=True)
            p = result.report["pooled"]
            shown = name + "".join(f" {k}={v}" for k, v in overrides.items())
            echo(f"{shown:>32}: UF1 {p.uf1:.4f}  UAR {p.uar:.4f}  ({time.time() - start:.1f} s, "
                 f"run {result.run_id})")
    rows = leaderboard_rows(st, PROTOCOL)
    if output:
        for path in write_tables(rows, output, PROTOCOL):
            echo(f"wrote {path}")
    from .site import write_site

    site = Path(output) / "site" if output else Path(st.path).parent / "site"
    echo(f"wrote {write_site(st, site, PROTOCOL)[0]} (the leaderboard site; open it in a browser)")
    return render(rows, "md")
