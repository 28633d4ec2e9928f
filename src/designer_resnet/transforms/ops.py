"""The `[[op, args], ...]` transformation format and how each op is applied.

Ops fall in three groups: deterministic image ops (can be written into the
image files once), random ops (must be re-drawn each time an image is used)
and tensor ops (act on the tensor after ToTensor, so never written to files).
"""

from __future__ import annotations

from typing import Callable

import torchvision.transforms as T

from ..component_source import defaults
from ..errors import UserError

DETERMINISTIC_OPS = frozenset({"Resize", "CenterCrop", "Pad", "Grayscale"})
RANDOM_OPS = frozenset({
    "RandomCrop", "RandomHorizontalFlip", "RandomVerticalFlip", "RandomResizedCrop", "ColorJitter",
    "RandomRotation", "RandomAffine", "RandomGrayscale", "RandomPerspective", "RandomErasing",
})
TENSOR_OPS = frozenset({"ToTensor", "Normalize", "RandomErasing"})
KNOWN_OPS = DETERMINISTIC_OPS | RANDOM_OPS | TENSOR_OPS
# Largest output side and padding an op list may ask for, wherever it is read (Init's own ranges):
# a crafted list must not make a reader allocate gigabytes per image.
MAX_SIDE = 8192
MAX_PADDING = 4096
# Which argument of each op is a size or a padding: (positional index, keyword).
_SIZE_ARGS = {"Resize": (0, "size"), "CenterCrop": (0, "size"), "RandomCrop": (0, "size"),
              "RandomResizedCrop": (0, "size")}
_PADDING_ARGS = {"Pad": (0, "padding"), "RandomCrop": (1, "padding")}
# Ops whose output has one size whatever the input's (a Resize to a (height, width) pair too).
FIXED_SIZE_OPS = frozenset({"CenterCrop", "RandomCrop", "RandomResizedCrop"})


def _build(name: str, args):
    cls = getattr(T, name)
    if isinstance(args, dict):
        return cls(**args)
    if isinstance(args, list):
        return cls(*args)
    if args is None:
        return cls()
    return cls(args)


def validate_ops(ops, *, input_name: str = "transformation") -> list[list]:
    """Check an op list; every op must be known and constructible with its args."""
    if not isinstance(ops, list):
        raise UserError(f"{input_name}: transformations must be a list of [op, args] pairs")
    clean = []
    for i, entry in enumerate(ops):
        if not (isinstance(entry, (list, tuple)) and len(entry) in (1, 2) and isinstance(entry[0], str)):
            raise UserError(f"{input_name}: entry {i} ({entry!r}) is not an [op, args] pair")
        name = entry[0]
        args = entry[1] if len(entry) == 2 else {}
        if name not in KNOWN_OPS:
            raise UserError(f"{input_name}: unknown transform {name!r}; allowed: {', '.join(sorted(KNOWN_OPS))}")
        try:
            _build(name, args)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{input_name}: {name} does not accept {args!r} ({exc})") from None
        _check_bounds(name, args, input_name)
        clean.append([name, args])
    return clean


def _argument(args, position: int, keyword: str):
    if isinstance(args, dict):
        return args.get(keyword)
    if isinstance(args, list):
        return args[position] if len(args) > position else None
    return args if position == 0 else None


def _numbers(value) -> list:
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _check_bounds(name: str, args, input_name: str) -> None:
    """Sizes in [1, MAX_SIDE] and paddings in [0, MAX_PADDING]; UserError otherwise."""
    for table, low, high, what in ((_SIZE_ARGS, 1, MAX_SIDE, "size"), (_PADDING_ARGS, 0, MAX_PADDING, "padding")):
        if name not in table:
            continue
        values = _numbers(_argument(args, *table[name]))
        if any(v < low or v > high for v in values):
            raise UserError(f"{input_name}: {name} {what} {values} is outside [{low}, {high}] pixels; "
                            "recreate the transformation with Init Image Transformation")


def without_random(ops: list) -> list:
    """The ops minus the random augmentations: what inference runs (image ops and tensor ops, Normalize too)."""
    return [op for op in ops if op[0] not in RANDOM_OPS]


def plan(ops: list[list], mode: str) -> tuple[list[list], list[list]]:
    """Split ops into (written into the files now, applied when the data is read).

    Training keeps every op, so random ones are re-drawn each epoch: the files
    get the leading deterministic image ops and the rest is deferred, order
    kept. Inference drops random ops; tensor ops are still deferred.
    """
    if mode == "inference":
        ops = without_random(ops)
    elif mode != "training":
        raise ValueError(f"mode must be 'training' or 'inference', not {mode!r}")
    split = 0
    while split < len(ops) and ops[split][0] in DETERMINISTIC_OPS:
        split += 1
    return ops[:split], ops[split:]


def image_pipeline(ops: list[list]) -> Callable:
    """PIL image -> PIL image, for ops that are all image (non-tensor) ops."""
    bad = [op[0] for op in ops if op[0] in TENSOR_OPS]
    if bad:
        raise ValueError(f"tensor ops {bad} cannot be applied to an image file")
    return T.Compose([_build(name, args) for name, args in ops])


def tensor_pipeline(ops: list[list]) -> Callable:
    """PIL image -> float tensor: the ops, with ToTensor put where it is needed."""
    steps = []
    have_tensor = False
    for name, args in ops:
        if name == "ToTensor":
            if have_tensor:
                continue
            have_tensor = True
        elif name in TENSOR_OPS and not have_tensor:
            steps.append(T.ToTensor())
            have_tensor = True
        steps.append(_build(name, args))
    if not have_tensor:
        steps.append(T.ToTensor())
    return T.Compose(steps)


def fixes_size(ops: list) -> bool:
    """True when the ops give every image the same size."""
    for name, args in ops:
        if name in FIXED_SIZE_OPS:
            return True
        size = args[0] if name == "Resize" and isinstance(args, list) and args else None
        if isinstance(size, list) and len(size) == 2:
            return True
    return False


# Init Image Transformation's switches, in its order (the order ops apply): switch -> (op, argument), where the
# argument is the name of the parameter holding it, or the op's fixed arguments. The parameters, their
# defaults and ranges are the component's (designer_resnet/components/init_image_transformation.yaml).
DESIGNER_SWITCHES = {
    "resize": ("Resize", "size"),
    "center_crop": ("CenterCrop", "crop_size"),
    "pad": ("Pad", "padding"),
    "color_jitter": ("ColorJitter", {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4}),
    # Three channels so the result still feeds an RGB model.
    "grayscale": ("Grayscale", {"num_output_channels": 3}),
    "random_resized_crop": ("RandomResizedCrop", "random_resized_crop_size"),
    "random_crop": ("RandomCrop", "random_crop_size"),
    "random_horizontal_flip": ("RandomHorizontalFlip", {}),
    "random_vertical_flip": ("RandomVerticalFlip", {}),
    "random_rotation": ("RandomRotation", "random_rotation_degrees"),
    "random_affine": ("RandomAffine", "random_affine_degrees"),
    "random_grayscale": ("RandomGrayscale", {}),
    "random_perspective": ("RandomPerspective", {}),
    "random_erasing": ("RandomErasing", {}),
}
INIT_COMPONENT = "init_image_transformation"


def designer_ops(**params) -> list[list]:
    """The op list for Init Image Transformation's parameters (the component's defaults for any not given)."""
    values = defaults(INIT_COMPONENT)
    unknown = set(params) - set(values)
    if unknown:
        raise TypeError(f"designer_ops: unknown parameter(s) {', '.join(sorted(unknown))}")
    values.update(params)
    ops: list[list] = []
    for switch, (op, argument) in DESIGNER_SWITCHES.items():
        if values[switch]:
            ops.append([op, values[argument] if isinstance(argument, str) else argument])
    return ops
