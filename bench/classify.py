"""Every registered classifier: our parameters and multiply-adds beside the paper's, measured in one run
(meta device, paper input size; conventions in cnnkit/core/summary.py).

    .venv/bin/python bench/classify.py
"""

from cnnkit.core.base.plugins import load_plugins
from cnnkit.core.base.registry import models
from cnnkit.core.models.summary import summarize


def pct(ours: float, paper: float | None) -> str:
    return "-" if not paper else f"{100 * (ours - paper) / paper:+.2f}%"


def main() -> None:
    load_plugins()
    print("| model | params (ours) | params (paper) | diff | MACs (ours) | MACs (paper) | diff | input |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, spec in models.items():
        if spec.plugin != "classify":
            continue
        r = summarize(spec)
        paper_p = f"{spec.paper_params / 1e6:.1f}M" if spec.paper_params else "-"
        paper_m = f"{spec.paper_macs / 1e9:.2f}G" if spec.paper_macs else "-"
        print(f"| {name} | {r['params'] / 1e6:.2f}M | {paper_p} | {pct(r['params'], spec.paper_params)} | "
              f"{r['macs'] / 1e9:.2f}G | {paper_m} | {pct(r['macs'], spec.paper_macs)} | {r['img_size']} |", flush=True)


if __name__ == "__main__":
    main()
