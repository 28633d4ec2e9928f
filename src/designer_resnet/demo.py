"""The local demo: sample digits through every component, ending with accuracy.

Convert to Image Directory -> Split Image Directory -> ResNet (resnet18, from
scratch: ImageNet weights are not reachable offline) -> Train PyTorch Model ->
Score Image Model -> Evaluate Model, each writing its port folder under
runs/demo-<time>/.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .data.convert import convert_to_image_directory
from .data.sample import write_digits
from .data.split import split_image_directory
from .evaluation.evaluate import evaluate_model
from .models.create import create_untrained_model
from .scoring.score import score_image_model
from .training.train import TrainConfig, train


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="designer-resnet demo", description=__doc__.splitlines()[0])
    p.add_argument("--runs-dir", default="runs", help="parent folder of the demo's run folder (default: runs)")
    p.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    args = p.parse_args(argv)
    run = Path(args.runs_dir) / time.strftime("demo-%Y%m%d-%H%M%S")
    start = time.perf_counter()

    def step(n: int, text: str) -> None:
        print(f"[{n}/7 {time.perf_counter() - start:5.1f}s] {text}", flush=True)

    n = write_digits(run / "sample_digits")
    step(1, f"wrote {n} sample digit images (scikit-learn digits, 32x32) to {run / 'sample_digits'}")
    report = convert_to_image_directory(run / "sample_digits", run / "convert_to_image_directory")
    step(2, f"Convert to Image Directory: {report.written} images, {len(report.categories or [])} classes")
    n1, n2 = split_image_directory(run / "convert_to_image_directory", run / "split" / "train",
                                   run / "split" / "validation", fraction=0.8, seed=42)
    step(3, f"Split Image Directory (0.8, stratified): {n1} train, {n2} validation")
    create_untrained_model(run / "resnet", {"model_name": "resnet18", "pretrained": False})
    step(4, "ResNet: resnet18, random initialisation")
    result = train(run / "resnet", run / "split" / "train", run / "split" / "validation", run / "train_pytorch_model",
                   TrainConfig(epochs=args.epochs, batch_size=16, learning_rate=0.01, print_frequency=10**6))
    best = result.history[result.best_epoch - 1]
    step(5, f"Train PyTorch Model: {len(result.history)} epochs, best validation top-1 {best.top1:.4f} (epoch {best.epoch})")
    score = score_image_model(run / "train_pytorch_model", run / "split" / "validation", run / "score_image_model")
    step(6, f"Score Image Model: {score.scored} validation images scored")
    (metrics,) = evaluate_model(run / "score_image_model", run / "evaluate_model")
    overall = metrics["overall"]
    step(7, "Evaluate Model: done")
    out = run.resolve()
    print(f"\naccuracy on the {overall['Rows']} validation images: {overall['Overall Accuracy']:.4f} "
          f"(macro F1 {overall['Macro F1']:.4f})")
    print(f"outputs under {out}:")
    print(f"  trained model    {out / 'train_pytorch_model'}  (training_curves.png inside)")
    print(f"  scored data      {out / 'score_image_model' / '_data.parquet'}")
    print(f"  metrics          {out / 'evaluate_model' / 'metrics.json'}")
    print(f"  plots            {out / 'evaluate_model' / 'confusion_matrix.png'}, "
          f"{out / 'evaluate_model' / 'per_class_metrics.png'}")
