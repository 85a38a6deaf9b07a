#!/usr/bin/env python3
"""Draws the evaluation curves of distillation runs (their `eval.jsonl`) into one PNG.

    python3 docs/plot_curves.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]

Each run gives its FID (EMA weights solid, raw weights dashed), its class agreement and its
training loss against the iteration. Needs matplotlib (`pip install matplotlib`).
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def points(run: Path):
    with open(run / "eval.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    runs = [arg.rsplit("=", 1) for arg in sys.argv[2:]]
    fig, (fid, agree, loss) = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, (label, run) in enumerate(runs):
        pts = [p for p in points(Path(run)) if p["iteration"] > 0]
        it = [p["iteration"] for p in pts]
        color = f"C{i}"
        fid.plot(it, [p["ema"]["fid"] for p in pts], "-o", color=color, ms=3, label=f"{label} (EMA)")
        fid.plot(it, [p["raw"]["fid"] for p in pts], "--", color=color, alpha=0.6, label=f"{label} (raw)")
        agree.plot(it, [100 * p["ema"]["class_agreement"] for p in pts], "-o", color=color, ms=3, label=label)
        with_loss = [p for p in pts if p.get("loss") is not None]
        loss.plot([p["iteration"] for p in with_loss], [p["loss"] for p in with_loss], "-", color=color, label=label)
    samples = {p["samples"] for _, run in runs for p in points(Path(run))}
    fid.set(title=f"FID ({', '.join(map(str, sorted(samples)))} samples per point)", xlabel="iteration", yscale="log")
    agree.set(title="class agreement (EMA), %", xlabel="iteration")
    loss.set(title="training loss (mean since the previous point)", xlabel="iteration", yscale="log")
    for ax in (fid, agree, loss):
        ax.grid(alpha=0.3)
    fid.legend(fontsize=7)
    agree.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
