"""Same seed, default parameters, CPU: the trained weights are byte-for-byte what they were.

The fingerprints were recorded before the uint8 input path (issue 16) replaced
per-image float tensors; moving normalisation after the batch must not change
a single bit of the weights. CPU kernels differ between instruction sets, so
the record is keyed by torch's CPU capability and the run uses one thread.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from designer_resnet.data.convert import convert_to_image_directory
from designer_resnet.directories.transformation_directory import write_transformation_directory
from designer_resnet.models.create import create_untrained_model
from designer_resnet.training.train import TrainConfig, train
from designer_resnet.transforms.apply import apply_image_transformation

# torch.backends.cpu.get_cpu_capability() -> {case: sha256 of the weights' bytes in key order}
RECORDED = {
    "AVX512": {
        "png": "4e405536fdeaf65d2b2034c6a9d3db74f93e031b445cd97e87418ff2fff44d8d",
        "jpeg_crop_flip": "c5bd67985b03eb3a6674472232000380cbc38edbe51973aa5418d64bf18bccca",
        "jpeg_crop_flip_workers": "c5bd67985b03eb3a6674472232000380cbc38edbe51973aa5418d64bf18bccca",
    },
}


def _weights_digest(model) -> str:
    state = model.state_dict()
    return hashlib.sha256(b"".join(state[k].detach().contiguous().numpy().tobytes() for k in sorted(state))).hexdigest()


def _write(root, count, size, fmt, seed):
    rng = np.random.default_rng(seed)
    for c, base in enumerate([(220, 30, 30), (30, 200, 30), (30, 30, 220)]):
        for i in range(count):
            pixels = np.clip(np.array(base) + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
            (root / f"c{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.{fmt}", quality=90)


def _run(tmp_path, case: str) -> str:
    if case == "png":
        _write(tmp_path / "raw_train", 12, (32, 32), "png", 0)
        _write(tmp_path / "raw_valid", 4, (32, 32), "png", 1)
        convert_to_image_directory(tmp_path / "raw_train", tmp_path / "train")
    else:  # JPEG files with a random crop and flip drawn every epoch
        _write(tmp_path / "raw_train", 12, (40, 36), "jpg", 0)
        _write(tmp_path / "raw_valid", 4, (32, 32), "jpg", 1)
        convert_to_image_directory(tmp_path / "raw_train", tmp_path / "train_raw")
        write_transformation_directory(tmp_path / "tf", [["RandomResizedCrop", 32], ["RandomHorizontalFlip", {}]])
        apply_image_transformation(tmp_path / "tf", tmp_path / "train_raw", tmp_path / "train", mode="For training")
    convert_to_image_directory(tmp_path / "raw_valid", tmp_path / "valid")
    create_untrained_model(tmp_path / "untrained", {"model_name": "resnet18", "pretrained": False})
    workers = 2 if case.endswith("workers") else 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(tmp_path / "untrained", tmp_path / "train", tmp_path / "valid", tmp_path / "model",
                       TrainConfig(epochs=2, workers=workers))
    finally:
        torch.set_num_threads(threads)
    return _weights_digest(result.model)


@pytest.mark.parametrize("case", ["png", "jpeg_crop_flip", "jpeg_crop_flip_workers"])
def test_default_training_weights_are_unchanged(tmp_path, case):
    capability = torch.backends.cpu.get_cpu_capability()
    digest = _run(tmp_path, case)
    print(f"{capability} {case} {digest}")
    if capability not in RECORDED:
        pytest.skip(f"no fingerprint recorded for CPU capability {capability} (recorded: {', '.join(RECORDED)})")
    assert digest == RECORDED[capability][case]
