"""``merbench demo``: the synthetic set, LOSO, several methods, the leaderboard, in minutes."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from .leaderboard import leaderboard_rows, render, write_tables
from .plugins import registry
from .store import Store

PROTOCOL = "synthetic-loso"
# (method, overrides): every built-in method fast enough for 2 CPU cores in the time budget.
DEMO_METHODS: list[tuple[str, dict[str, Any]]] = [
    ("chance", {}),
    ("apex-logreg", {}),
    ("diff-logreg", {}),
    ("lbptop-svm", {}),
    ("lbpsip-svm", {}),
    # the published 500 epochs take ~1.5 min more on 2 cores; 100 keep the demo under 3 min
    ("flow-ststnet", {"model.epochs": 100}),
]
DEFAULT_STORE = Path("merbench-results") / "demo.sqlite"


def run_demo(store: str | Path | None = None, output: str | Path | None = None, workers: int = 2,
             echo: Callable[[str], None] = lambda s: None) -> str:
    from .runner import run

    st = Store(store or DEFAULT_STORE)
    methods = registry()["method"]
    for name, overrides in DEMO_METHODS:
        if name not in methods:
            echo(f"skipping {name}: not registered")
            continue
        start = time.time()
        result = run(protocol=PROTOCOL, method=name, overrides=overrides, store=st,
                     workers=workers, quiet=True)
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
