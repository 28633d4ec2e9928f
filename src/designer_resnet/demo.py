"""The local demo: pipelines/image_classification.yml on the built-in digits, run by the local runner.

Convert to Image Directory (train and test) -> Init/Apply Image Transformation ->
Split Image Directory -> ResNet (resnet18 from scratch: ImageNet weights are not
reachable offline) -> Train PyTorch Model -> Score Image Model -> Evaluate Model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from . import assets
from .arguments import ComponentArgumentParser, int_in
from .data.sample import write_digits
from .directories.dataframe_directory import read_dataframe_directory
from .errors import UserError
from .runner.graph import load_pipeline
from .runner.run import run_pipeline

PIPELINE = f"{assets.PIPELINES}/image_classification.yml"
# What the demo sets and reads: a --pipeline of the user's must have these inputs and jobs.
DEMO_INPUTS = ("train_images", "test_images", "model_name", "pretrained", "epochs", "batch_size", "learning_rate",
               "resize_size", "crop_size", "horizontal_flip")
DEMO_JOBS = ("train", "score", "evaluate")


def _check_pipeline(path: str) -> None:
    """A --pipeline of the user's has the demo's inputs and jobs: fail now, not after the whole run."""
    pipeline = load_pipeline(path)
    lacking = [f"input {n}" for n in DEMO_INPUTS if n not in (pipeline.doc.get("inputs") or {})]
    lacking += [f"job {n}" for n in DEMO_JOBS if n not in pipeline.nodes]
    if lacking:
        raise UserError(f"--pipeline: {path} lacks {', '.join(lacking)}, which the demo sets or reads; give a copy "
                        f"of {PIPELINE} (or leave --pipeline out)")


def main(argv=None) -> None:
    p = ComponentArgumentParser(prog="designer-resnet demo", description=__doc__.splitlines()[0])
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    p.add_argument("--epochs", type=int_in(1), default=6, help="training epochs (default 6)")
    p.add_argument("--pipeline", default=None, help=f"pipeline YAML (default: the package's {PIPELINE})")
    args = p.parse_args(argv)
    if args.pipeline is not None:
        if not args.pipeline.strip():
            p.error("--pipeline is empty; give a pipeline YAML or leave --pipeline out")
        _check_pipeline(args.pipeline)
    data = Path(args.runs_dir).resolve() / "sample_digits"
    if not (data / "train").exists():
        n = write_digits(data / "train", test_folder=data / "test")
        print(f"wrote {n} scikit-learn digit images (32x32): 4/5 to {data / 'train'}, 1/5 to {data / 'test'}")
    overrides = {"train_images": str(data / "train"), "test_images": str(data / "test"), "model_name": "resnet18",
                 "pretrained": "false", "epochs": str(args.epochs), "batch_size": "16", "learning_rate": "0.01",
                 "resize_size": "32", "crop_size": "32", "horizontal_flip": "false"}  # a mirrored digit is not a digit
    with tempfile.TemporaryDirectory(prefix="designer-resnet-") as scratch:
        # The package's pipeline and specs, laid out with this package as their code (`code: ../src`),
        # so the demo runs the same from a checkout and from an installed package.
        pipeline = args.pipeline or assets.stage(Path(scratch)) / PIPELINE
        result = run_pipeline(pipeline, overrides, runs_dir=args.runs_dir)
    evaluation = result.nodes["evaluate"].folder / "evaluation_results"
    table = read_dataframe_directory(evaluation)
    row = table.iloc[0]
    print(f"\naccuracy on the {int(row['Rows'])} held-out test images: {row['Overall Accuracy']:.4f} "
          f"(macro F1 {row['Macro F1']:.4f})")
    print(f"outputs under {result.run_dir}:")
    print(f"  trained model  {result.nodes['train'].folder / 'trained_model'}  (training_curves.png inside)")
    print(f"  scored data    {result.nodes['score'].folder / 'scored_dataset' / '_data.parquet'}")
    print(f"  metrics        {evaluation / 'metrics.json'}")
    print(f"  plots          {evaluation / 'confusion_matrix.png'}, {evaluation / 'per_class_metrics.png'}")
    print(f"  logs           {result.run_dir}/<job>/log.txt")
