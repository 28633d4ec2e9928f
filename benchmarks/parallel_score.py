"""Score Image Model (parallel), one worker, against Score Image Model: images/s and peak memory.

Every measurement runs in a fresh child process, so its peak RSS is its own
and no run warms the next; the clock starts after the imports. Score Image
Model runs with no loader workers, so both read the images in their own
process. The worker is the entry script imported by its path and driven as
one Azure ML worker process is: program arguments on sys.argv, `init()`, then
`run()` on each mini-batch of `--mini-batch-size` files of the dataset's folder
(metadata files included), then `shutdown()`. Both read the model and the
dataset's rows and write their output (a table, or a part per mini-batch).
Merge Scored Parts is timed apart: it runs once per job, not per worker.

Throughput: on the smallest image set, Score and the worker alternately,
`--repeats` times, medians compared (target worker ÷ Score ≥ 0.9); each process
gets `--threads` torch threads (default 1: one worker a core, as a node runs
them; two threads on a busy two-core machine measure its neighbours). Memory: both
on every image set. The worker keeps no image, tensor or probability past its
mini-batch, so from the smallest set to the largest its peak grows only by its
row index: the dataset's rows as read (about 0.8 KB an image) and the path to
row map (about 0.3 KB); Score Image Model also holds every probability and the table.

    .venv/bin/python benchmarks/parallel_score.py [--images 1000 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import make_images  # noqa: E402

from designer_resnet.data.convert import convert_to_image_directory  # noqa: E402
from designer_resnet.models.create import create_untrained_model  # noqa: E402
from designer_resnet.runner.parallel import mini_batches  # noqa: E402
from designer_resnet.training.train import TrainConfig, train  # noqa: E402

ENTRY = Path(__file__).resolve().parents[1] / "src/designer_resnet/components/score_image_model_parallel.py"

CHILD = r"""
import json, sys, time
from pathlib import Path
mode, entry, model, images, out, batch_size, batches = sys.argv[1:8]
if mode == "worker":
    import importlib.util
    import designer_resnet.scoring.parallel  # what the entry script imports, before the clock as for the others
    start = time.perf_counter()
    sys.argv = [entry, "--trained_model", model, "--dataset", images, "--batch_size", batch_size,
                "--precision", "auto", "--memory_format", "auto", "--scored_parts", out]
    spec = importlib.util.spec_from_file_location(Path(entry).stem, entry)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.init()
    with open(batches) as lines:  # one mini-batch at a time, as the driver's queue hands them over
        for line in lines:
            module.run(json.loads(line))
    module.shutdown()
elif mode == "score":
    from designer_resnet.scoring.score import score_image_model
    start = time.perf_counter()
    score_image_model(model, images, out, batch_size=int(batch_size), workers=0)
else:  # merge: `model` is the worker's parts folder
    from designer_resnet.scoring.parallel import merge_parts
    start = time.perf_counter()
    merge_parts(model, images, out)
elapsed = time.perf_counter() - start
# VmHWM is this process's own peak; ru_maxrss would include the forking parent's.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"seconds": elapsed, "peak_rss_mb": int(hwm) / 1024}))
"""


def batches_file(images: Path) -> Path:
    return images.with_name(images.name + ".batches")


def write_mini_batches(images: Path, size: int) -> None:
    """The driver's mini-batches of the dataset's folder, one JSON list a line: the driver lists the files, not
    the worker, which holds one mini-batch at a time."""
    batches_file(images).write_text("".join(json.dumps(batch) + "\n" for batch in mini_batches(images, size)))


def measure(mode: str, first: Path, images: Path, out: Path, args) -> dict:
    """Seconds and peak RSS of one child: `first` is the model folder (the parts folder for merge)."""
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(ENTRY), str(first), str(images), str(out),
                           str(args.batch_size), str(batches_file(images))], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if done.returncode:
        raise SystemExit(f"{mode} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_model(tmp: Path, size: int) -> Path:
    """resnet18 trained one epoch on 60 images: scoring's cost does not depend on how well it learnt."""
    make_images(tmp / "raw_train", 60, size)
    convert_to_image_directory(tmp / "raw_train", tmp / "train")
    create_untrained_model(tmp / "untrained", {"model_name": "resnet18", "pretrained": False})
    train(tmp / "untrained", tmp / "train", tmp / "train", tmp / "model",
          TrainConfig(epochs=1, batch_size=20, print_frequency=10**6, workers=0))
    return tmp / "model"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, nargs="+", default=[1000, 20000],
                   help="image set sizes: throughput on the smallest, peak RSS on each")
    p.add_argument("--size", type=int, default=32, help="image edge in pixels")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of each measured process (one worker a core, as a node runs them)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--mini-batch-size", type=int, default=256, help="files per mini-batch (the spec's default)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sizes = sorted(set(args.images))
    runs: dict[int, dict[str, list[dict]]] = {n: {"score": [], "worker": [], "merge": []} for n in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_model(tmp, args.size)
        for n in sizes:
            make_images(tmp / f"raw{n}", n, args.size)
            convert_to_image_directory(tmp / f"raw{n}", tmp / f"images{n}")
            write_mini_batches(tmp / f"images{n}", args.mini_batch_size)
        for n in sizes:
            images = tmp / f"images{n}"
            for r in range(args.repeats if n == sizes[0] else 1):
                runs[n]["score"].append(measure("score", model, images, tmp / f"scored{n}_{r}", args))
                parts = tmp / f"parts{n}_{r}"
                runs[n]["worker"].append(measure("worker", model, images, parts, args))
                runs[n]["merge"].append(measure("merge", parts, images, tmp / f"merged{n}_{r}", args))

    def median(n: int, mode: str, key: str) -> float:
        return float(np.median([run[key] for run in runs[n][mode]]))

    n0 = sizes[0]
    score, worker, merge = (median(n0, mode, "seconds") for mode in ("score", "worker", "merge"))
    print(f"resnet18 {args.size}x{args.size}, batch {args.batch_size}, mini-batches of {args.mini_batch_size} files, "
          f"{args.threads} CPU thread(s) each; throughput on {n0} images, median of {args.repeats}")
    print(f"Score Image Model (workers 0):    {n0 / score:8.1f} images/s")
    print(f"one parallel worker (init + run): {n0 / worker:8.1f} images/s")
    print(f"ratio worker / Score: {score / worker:.3f}  (target >= 0.9)")
    print(f"Merge Scored Parts: {merge:.3f} s, {merge / (worker + merge):.1%} of worker + merge")
    print(f"{'images':>7} {'worker img/s':>13} {'Score img/s':>12} {'worker peak RSS MB':>19} "
          f"{'Score peak RSS MB':>18} {'merge peak RSS MB':>18}")
    for n in sizes:
        print(f"{n:>7} {n / median(n, 'worker', 'seconds'):>13.0f} {n / median(n, 'score', 'seconds'):>12.0f} "
              f"{median(n, 'worker', 'peak_rss_mb'):>19.1f} {median(n, 'score', 'peak_rss_mb'):>18.1f} "
              f"{median(n, 'merge', 'peak_rss_mb'):>18.1f}")
    if len(sizes) >= 2:
        n1 = sizes[-1]
        named = (("parallel worker", "worker"), ("Score Image Model", "score"), ("Merge Scored Parts", "merge"))
        for name, mode in named:
            grown = median(n1, mode, "peak_rss_mb") - median(n0, mode, "peak_rss_mb")
            print(f"{name} peak RSS growth from {n0} to {n1} images: {grown:+.1f} MB "
                  f"({grown * 1024 * 1024 / (n1 - n0):.0f} bytes per extra image)")


if __name__ == "__main__":
    main()
