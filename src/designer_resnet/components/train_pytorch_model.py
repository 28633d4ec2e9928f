"""Train PyTorch Model: untrained model + labelled ImageDirectories -> ModelDirectory."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

from ..component_source import parse
from ..errors import UserError, run_entry
from ..models.create import create_untrained_model
from ..models.model_directory import read_start
from ..models.registry import family_of
from ..training.train import TrainConfig, train

NAME = "train_pytorch_model"
# The parameter this module consumes before training (not a TrainConfig field): the architecture to re-build the
# untrained model as, so a sweep can vary it.
ARCHITECTURE = "model_name"


def main(argv=None) -> None:
    args = parse(NAME, argv)
    ports, params = args.ports, dict(args.params)
    with _as_architecture(ports["untrained_model"], params.pop(ARCHITECTURE)) as untrained:
        result = train(untrained, ports["training_data"], ports["validation_data"], ports["trained_model"],
                       TrainConfig(**params), checkpoint_dir=ports["checkpoint_path"])
    if result.model is not None:  # rank 0
        best = result.history[result.best_epoch - 1]
        print(f"trained {len(result.history)} epoch(s); best validation top-1 {best.top1:.4f} at epoch {best.epoch}; "
              f"model in {ports['trained_model']}")


@contextlib.contextmanager
def _as_architecture(untrained_dir: str, model_name: str | None):
    """The untrained model to train: the connected one, or with `model_name` its settings as that architecture.

    A sweep's trials differ only in Train's own inputs, so sweeping the architecture needs it here;
    the re-built untrained model lives in a temporary folder for the run.
    """
    if model_name is None:
        yield untrained_dir
        return
    untrained = read_start(untrained_dir, input_name="untrained_model")
    if untrained.initial is not None:
        raise UserError(f"model_name: the untrained_model input is a trained model ({untrained.model_name}), which training "
                        "continues as it is; leave model_name unset, or connect a ResNet or DenseNet module's output")
    if model_name == untrained.model_name:
        yield untrained_dir
        return
    family = family_of(model_name)
    if family != untrained.family:
        raise UserError(f"model_name: {model_name} is a {family}, but the untrained model is a {untrained.family} "
                        f"({untrained.model_name}); choose a {untrained.family} architecture or connect the "
                        f"{family} module's output")
    with tempfile.TemporaryDirectory(prefix="designer-resnet-untrained-") as scratch:
        folder = Path(scratch) / "untrained_model"
        create_untrained_model(folder, {**untrained.init_params, "model_name": model_name})
        yield folder


if __name__ == "__main__":
    sys.exit(run_entry(main))
