#!/usr/bin/env python3
"""Draws docs/same-noise-grid.png: the teacher (25 and 4 DDIM steps), the ARD student, the ARD
student after the adversarial stage and the step-distillation baseline from the same starting
noise (`ard sample --seed 5`), one class per column. Needs Pillow and a release build
(`cargo build --release --bin ard`).

    python3 docs/same_noise_grid.py [TEACHER ARD BASELINE [ARD_GAN]]   # default: assets/
"""

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
CELL, GAP, COLS = 112, 2, 8  # the layout of `ard sample --png` (28 px images at 4x)


def sample(weights: str, out: Path, *extra: str) -> list:
    labels = ",".join(str(i % 10) for i in range(10))
    subprocess.run([str(ROOT / "target/release/ard"), "sample", "--weights", weights, "--seed", "5",
                    "--labels", labels, "--png", str(out), "--device", "cpu", *extra], check=True)
    im = Image.open(out)
    cells = []
    for i in range(10):
        r, c = divmod(i, COLS)
        x, y = c * (CELL + GAP), r * (CELL + GAP)
        cells.append(im.crop((x, y, x + CELL, y + CELL)).resize((84, 84), Image.NEAREST))
    return cells


def main() -> None:
    teacher, ard, base = sys.argv[1:4] if len(sys.argv) >= 4 else [
        str(ROOT / "assets" / f) for f in ("teacher.safetensors", "ard.safetensors", "baseline.safetensors")]
    gan = sys.argv[4] if len(sys.argv) >= 5 else str(ROOT / "assets" / "ard_gan.safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        rows = [("teacher, 25-step DDIM", sample(teacher, t / "t25.png")),
                ("ARD student (N=2), 4 steps", sample(ard, t / "ard.png"))]
        if Path(gan).exists():
            rows.append(("ARD + GAN (N=2), 4 steps", sample(gan, t / "gan.png")))
        rows += [("step distillation (N=0), 4 steps", sample(base, t / "base.png")),
                 ("teacher, 4-step DDIM", sample(teacher, t / "t4.png", "--steps", "4"))]
    label_w, s = 210, 84
    grid = Image.new("RGB", (label_w + 10 * (s + 2), len(rows) * (s + 2)), (24, 24, 24))
    draw = ImageDraw.Draw(grid)
    for r, (name, cells) in enumerate(rows):
        draw.text((8, r * (s + 2) + s // 2 - 6), name, fill=(230, 230, 230))
        for c, im in enumerate(cells):
            grid.paste(im, (label_w + c * (s + 2), r * (s + 2)))
    out = ROOT / "docs" / "same-noise-grid.png"
    grid.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
