"""Convert to Image Directory: throughput and peak memory at 1,000 and 5,000 images.

Each measurement runs in a fresh child process so its peak RSS is its own.
The baseline is a plain loop that copies the same files with no checks, in
the same run; ours also decodes every image fully to catch corrupt and
truncated files, which is most of the difference. Memory is bounded when the peak RSS grows by no more than the
row list (a few hundred bytes an image) from 1,000 to 5,000 images.

    .venv/bin/python benchmarks/convert_memory.py [--sizes 1000 5000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CHILD = r"""
import json, shutil, sys, time
from pathlib import Path
mode, src, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
start = time.perf_counter()
if mode == "ours":
    from designer_resnet.data.convert import convert_to_image_directory
    n = convert_to_image_directory(src, out).written
else:
    import os
    n = 0
    out.mkdir()
    for cls in sorted(os.listdir(src)):
        (out / cls).mkdir()
        for name in sorted(os.listdir(src / cls)):
            shutil.copyfile(src / cls / name, out / cls / name)
            n += 1
elapsed = time.perf_counter() - start
# VmHWM is this process's own peak; ru_maxrss would include the forking parent's.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"images": n, "seconds": elapsed, "peak_rss_mb": int(hwm) / 1024}))
"""


def make_images(root: Path, count: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")


def measure(mode: str, src: Path, out: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(out)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            src = Path(tmp) / f"src{n}"
            make_images(src, n)
            plain = measure("plain", src, Path(tmp) / f"plain{n}")
            ours = measure("ours", src, Path(tmp) / f"ours{n}")
            rows.append((n, ours, plain))
    print(f"{'images':>7} {'ours img/s':>11} {'plain img/s':>12} {'ratio':>6} {'ours peak RSS MB':>17} {'plain peak RSS MB':>18}")
    for n, ours, plain in rows:
        o, b = n / ours["seconds"], n / plain["seconds"]
        print(f"{n:>7} {o:>11.0f} {b:>12.0f} {o / b:>6.2f} {ours['peak_rss_mb']:>17.1f} {plain['peak_rss_mb']:>18.1f}")
    if len(rows) >= 2:
        (n0, o0, _), (n1, o1, _) = rows[0], rows[-1]
        per_image = (o1["peak_rss_mb"] - o0["peak_rss_mb"]) * 1024 * 1024 / (n1 - n0)
        print(f"peak RSS growth from {n0} to {n1} images: {o1['peak_rss_mb'] - o0['peak_rss_mb']:+.1f} MB "
              f"({per_image:.0f} bytes per extra image)")


if __name__ == "__main__":
    main()
