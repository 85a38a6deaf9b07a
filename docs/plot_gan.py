#!/usr/bin/env python3
"""Draws the curves of adversarial fine-tuning runs (`ard finetune-gan`) into one PNG.

    python3 docs/plot_gan.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]

For each run: its FID against the iteration (`eval.jsonl`; EMA weights solid, raw dashed), and
from the loss parts its checkpoint records per iteration (`checkpoint.safetensors`), the
discriminator's hinge loss, the adaptive weight and the regression term, each smoothed over 50
iterations. Needs matplotlib (`pip install matplotlib`).
"""

import json
import struct
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The order of `GAN_METRICS` in engine/src/gan/finetune.rs.
REGRESSION, ADVERSARIAL, DISCRIMINATOR, WEIGHT, D_REAL, D_FAKE = range(6)


def eval_points(run: Path):
    path = run / "eval.jsonl"
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def metrics(run: Path):
    """(iteration, values) of every iteration, from the checkpoint's header."""
    with open(run / "checkpoint.safetensors", "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    run_state = json.loads(header["__metadata__"]["ard_studio_checkpoint"])
    return run_state.get("metrics", [])


def smooth(xs, width=50):
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= width:
            acc -= xs[i - width]
        out.append(acc / min(i + 1, width))
    return out


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    runs = [arg.rsplit("=", 1) for arg in sys.argv[2:]]
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    fid, disc, weight, reg = axes
    for i, (label, run) in enumerate(runs):
        run, color = Path(run), f"C{i}"
        pts = eval_points(run)
        it = [p["iteration"] for p in pts]
        fid.plot(it, [p["ema"]["fid"] for p in pts], "-o", color=color, ms=3, label=f"{label} (EMA)")
        fid.plot(it, [p["raw"]["fid"] for p in pts], "--", color=color, alpha=0.6)
        m = metrics(run)
        its = [row[0] + 1 for row in m]
        disc.plot(its, smooth([row[1][DISCRIMINATOR] for row in m]), color=color, label=label)
        weight.plot(its, smooth([row[1][WEIGHT] for row in m]), color=color, label=label)
        reg.plot(its, smooth([row[1][REGRESSION] for row in m]), color=color, label=label)
    samples = {p["samples"] for _, run in runs for p in eval_points(Path(run))}
    fid.set(title=f"FID ({', '.join(map(str, sorted(samples)))} samples per point)", xlabel="iteration")
    disc.set(title="discriminator hinge loss (2 = chance)", xlabel="iteration")
    weight.set(title="adaptive weight λ", xlabel="iteration", yscale="log")
    reg.set(title="regression term (the run's --loss)", xlabel="iteration", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    fid.legend(fontsize=7)
    disc.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
