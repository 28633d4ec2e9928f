"""The `[[op, args], ...]` transformation format and how each op is applied.

Ops fall in three groups: deterministic image ops (can be written into the
image files once), random ops (must be re-drawn each time an image is used)
and tensor ops (act on the tensor after ToTensor, so never written to files).
"""

from __future__ import annotations

import inspect
import math
import reprlib
from typing import Callable

import torchvision.transforms as T

from ..component_source import defaults, parameters
from ..errors import UserError

DETERMINISTIC_OPS = frozenset({"Resize", "CenterCrop", "Pad", "Grayscale"})
# The automatic augmentation policies of torchvision's reference recipe (its --auto-augment): random ops on the
# image, before ToTensor. Each argument an op list may give one, as the Init Image Transformation parameter that
# sets it: that parameter's type, enum and range bound the argument wherever an op list is read. Their
# `interpolation` and `fill` stay torchvision's defaults (an op list cannot give them).
POLICY_OPS = {
    "AutoAugment": {"policy": "auto_augment_policy"},
    "RandAugment": {"num_ops": "rand_augment_num_ops", "magnitude": "rand_augment_magnitude",
                    "num_magnitude_bins": "num_magnitude_bins"},
    "TrivialAugmentWide": {"num_magnitude_bins": "num_magnitude_bins"},
    "AugMix": {"severity": "augmix_severity", "mixture_width": "augmix_mixture_width",
               "chain_depth": "augmix_chain_depth", "alpha": "augmix_alpha"},
}
RANDOM_OPS = frozenset({
    "RandomCrop", "RandomHorizontalFlip", "RandomVerticalFlip", "RandomResizedCrop", "ColorJitter",
    "RandomRotation", "RandomAffine", "RandomGrayscale", "RandomPerspective", "RandomErasing", *POLICY_OPS,
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
# No op may enlarge an image past this many pixels: Pillow's own decompression-bomb limit (Image.MAX_IMAGE_PIXELS,
# 256 MiB as RGB), which every file read is already held to. Resize(<int>) scales the short side, so without it a
# thin image grows without bound: a 192-byte 20000x1 PNG becomes 5120000x256 (3.7 GiB) at Resize 256. Any op list
# within MAX_SIDE fits when the image's shape is not extreme (Resize 8192 of a 4:3 photo: 8192x10922).
MAX_PIXELS = 1024**3 // 4 // 3
TOO_LARGE_FIX = ("crop such images to a less extreme aspect ratio first, or give the transformation's Resize a "
                 "[height, width] pair")


def build_op(name: str, args):
    cls = getattr(T, name)
    if name in POLICY_OPS:
        return cls(**_policy_arguments(name, args))
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
        if name in POLICY_OPS:
            _check_policy(name, args, input_name, after=[op for op, _ in clean if op in TENSOR_OPS])
        try:
            build_op(name, args)
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


def _bound_arguments(name: str, args) -> dict:
    """A policy op's arguments by keyword, as given; TypeError as the call would raise it."""
    signature = inspect.signature(getattr(T, name))
    if isinstance(args, dict):
        return dict(signature.bind(**args).arguments)
    return dict(signature.bind(*(args if isinstance(args, list) else [] if args is None else [args])).arguments)


def _policy_arguments(name: str, args) -> dict:
    """A policy op's keyword arguments for torchvision: AutoAugment's policy as its enum."""
    arguments = _bound_arguments(name, args)
    if name == "AutoAugment" and "policy" in arguments:
        arguments["policy"] = T.AutoAugmentPolicy(arguments["policy"])
    return arguments


def _check_policy(name: str, args, input_name: str, after: list) -> None:
    """A policy op's arguments of its Init parameters' types and ranges, and the op before any tensor op; UserError."""
    fix = "recreate the transformation with Init Image Transformation"
    if after:
        raise UserError(f"{input_name}: {name} acts on the image, so it must come before {after[0]}; {fix}")
    try:
        arguments = _bound_arguments(name, args)
    except TypeError as exc:
        raise UserError(f"{input_name}: {name} does not accept {reprlib.repr(args)} ({exc})") from None
    allowed = POLICY_OPS[name]
    for key, value in arguments.items():
        if key not in allowed:
            raise UserError(f"{input_name}: {name} takes only {', '.join(allowed)}, not {key!r}; {fix}")
        problem = _outside(value, parameters(INIT_COMPONENT)[allowed[key]])
        if problem:
            raise UserError(f"{input_name}: {name} {key} {reprlib.repr(value)} {problem}; {fix}")
    if "magnitude" in arguments:  # RandAugment indexes its bins with it
        bins = arguments.get("num_magnitude_bins",
                             inspect.signature(getattr(T, name)).parameters["num_magnitude_bins"].default)
        if arguments["magnitude"] > bins - 1:
            raise UserError(f"{input_name}: {name} magnitude {arguments['magnitude']} is above num_magnitude_bins - 1 "
                            f"({bins - 1}); {fix}")


def _outside(value, entry: dict) -> str | None:
    """Why `value` is not one an Init parameter of `entry` (its type, enum, min and max) may take; None when it is."""
    if entry.get("enum") is not None:
        choices = [str(v) for v in entry["enum"]]
        return None if isinstance(value, str) and value in choices else f"is not one of {', '.join(choices)}"
    number = (int,) if entry["type"] == "Integer" else (int, float)
    if (isinstance(value, bool) or not isinstance(value, number)
            or isinstance(value, float) and not math.isfinite(value)):
        return "is not a whole number" if entry["type"] == "Integer" else "is not a finite number"
    if not entry["min"] <= value <= entry["max"]:
        return f"is outside [{entry['min']}, {entry['max']}]"
    return None


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


class ImageTooLarge(ValueError):
    """An image an op would enlarge past MAX_PIXELS; the message gives the sizes, the op and the fix."""


def check_image_size(ops: list, size: tuple[int, int]) -> None:
    """Raise ImageTooLarge when an op of `ops` would make an image of `size` (width, height) larger than MAX_PIXELS.

    Sizes are followed op by op from the header's size (random ops at their largest), before any pixel is made. An
    image already larger (Pillow reads up to twice the limit) may pass through ops that do not enlarge it.
    """
    width, height = size
    for name, args in ops:
        largest, (width_after, height_after) = _sizes_through(name, args, width, height)
        pixels = largest[0] * largest[1]
        if pixels > MAX_PIXELS and pixels > width * height:
            raise ImageTooLarge(f"a {size[0]}x{size[1]} image would become {largest[0]}x{largest[1]} "
                                f"({pixels:,} pixels) at {name}, over the limit of {MAX_PIXELS:,} pixels for a "
                                f"transformed image; {TOO_LARGE_FIX}")
        width, height = width_after, height_after


def _sizes_through(name: str, args, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(largest image the op makes on the way, its output) as (width, height) pairs, for a width x height input."""
    if name == "Resize":
        out = _resized(_argument(args, 0, "size"), _argument(args, 2, "max_size"), width, height)
        return out, out
    if name in ("Pad", "RandomCrop"):
        left, top, right, bottom = _ltrb(_argument(args, *_PADDING_ARGS[name]))
        padded = (width + left + right, height + top + bottom)
        if name == "Pad":
            return padded, padded
        crop = _pair(_argument(args, 0, "size"))
        return (max(padded[0], crop[0]), max(padded[1], crop[1])), crop  # pad_if_needed pads up to the crop
    if name == "CenterCrop":  # pads an image smaller than the crop, then crops
        crop = _pair(_argument(args, 0, "size"))
        return (max(width, crop[0]), max(height, crop[1])), crop
    if name == "RandomResizedCrop":  # a crop of the image, resized
        crop = _pair(_argument(args, 0, "size"))
        return crop, crop
    if name == "RandomRotation" and _argument(args, 2, "expand"):
        out = _rotated(_argument(args, 0, "degrees"), width, height)
        return out, out
    return (width, height), (width, height)


def _pair(size) -> tuple[int, int]:
    """torchvision's size argument (an int, [side] or [height, width]) as (width, height)."""
    if isinstance(size, (list, tuple)):
        return (int(size[1]), int(size[0])) if len(size) == 2 else (int(size[0]), int(size[0]))
    return int(size), int(size)


def _ltrb(padding) -> tuple[int, int, int, int]:
    """torchvision's padding argument (an int, [all], [left/right, top/bottom] or [l, t, r, b]) as (l, t, r, b)."""
    values = [int(v) for v in (padding if isinstance(padding, (list, tuple)) else [padding or 0])]
    if len(values) == 1:
        return values[0], values[0], values[0], values[0]
    if len(values) == 2:
        return values[0], values[1], values[0], values[1]
    return values[0], values[1], values[2], values[3]


def _resized(size, max_size, width: int, height: int) -> tuple[int, int]:
    """The (width, height) torchvision's Resize gives (a short side, or a [height, width] pair; `max_size` caps)."""
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[1]), int(size[0])
    short, long = min(width, height), max(width, height)
    if size is None:  # only max_size: the long side becomes it
        new_short, new_long = int(max_size * short / long), int(max_size)
    else:
        new_short = int(size[0] if isinstance(size, (list, tuple)) else size)
        new_long = int(new_short * long / short)
        if max_size is not None and new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), int(max_size)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _rotated(degrees, width: int, height: int) -> tuple[int, int]:
    """The bounding box of a width x height image at the angle in `degrees` (RandomRotation's) that grows it most."""
    low, high = (-abs(degrees), abs(degrees)) if isinstance(degrees, (int, float)) else sorted(degrees)
    # The box's area grows with |sin 2θ|: 45° plus a multiple of 90° is the worst, else the end nearest one.
    worst = 45 + 90 * math.ceil((low - 45) / 90)
    if worst > high:
        worst = max((low, high), key=lambda a: abs(math.sin(math.radians(2 * a))))
    cos, sin = abs(math.cos(math.radians(worst))), abs(math.sin(math.radians(worst)))
    return math.ceil(width * cos + height * sin), math.ceil(width * sin + height * cos)


class _SizeCheck:
    """A pipeline's first step: refuses (ImageTooLarge) an image its ops would enlarge past MAX_PIXELS."""

    def __init__(self, ops: list):
        self.ops = [list(op) for op in ops]

    def __call__(self, image):
        size = image.size if not hasattr(image, "shape") else (image.shape[-1], image.shape[-2])
        check_image_size(self.ops, size)
        return image


def image_pipeline(ops: list[list]) -> Callable:
    """PIL image -> PIL image, for ops that are all image (non-tensor) ops; ImageTooLarge before any work."""
    bad = [op[0] for op in ops if op[0] in TENSOR_OPS]
    if bad:
        raise ValueError(f"tensor ops {bad} cannot be applied to an image file")
    return T.Compose([_SizeCheck(ops)] + [build_op(name, args) for name, args in ops])


def tensor_pipeline(ops: list[list]) -> Callable:
    """PIL image -> float tensor: the ops, with ToTensor put where it is needed; ImageTooLarge as image_pipeline."""
    steps: list = [_SizeCheck(ops)]
    have_tensor = False
    for name, args in ops:
        if name == "ToTensor":
            if have_tensor:
                continue
            have_tensor = True
        elif name in TENSOR_OPS and not have_tensor:
            steps.append(T.ToTensor())
            have_tensor = True
        steps.append(build_op(name, args))
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
# The parameter choosing one of POLICY_OPS (or NO_POLICY); its op goes where the parameter sits among the switches:
# after the random crops and flips, as in torchvision's reference recipe.
POLICY_SWITCH = "policy_augmentation"
NO_POLICY = "None"
INIT_COMPONENT = "init_image_transformation"


def designer_ops(**params) -> list[list]:
    """The op list for Init Image Transformation's parameters (the component's defaults for any not given).

    UserError when RandAugment's magnitude is not below its number of magnitude bins.
    """
    values = defaults(INIT_COMPONENT)
    unknown = set(params) - set(values)
    if unknown:
        raise TypeError(f"designer_ops: unknown parameter(s) {', '.join(sorted(unknown))}")
    values.update(params)
    ops: list[list] = []
    for name, value in values.items():  # the component's order
        if name in DESIGNER_SWITCHES and value:
            op, argument = DESIGNER_SWITCHES[name]
            ops.append([op, values[argument] if isinstance(argument, str) else argument])
        elif name == POLICY_SWITCH and value != NO_POLICY:
            ops.append([value, {key: values[parameter] for key, parameter in POLICY_OPS[value].items()}])
    if values[POLICY_SWITCH] == "RandAugment" and values["rand_augment_magnitude"] >= values["num_magnitude_bins"]:
        raise UserError(f"rand_augment_magnitude {values['rand_augment_magnitude']} must be below num_magnitude_bins "
                        f"{values['num_magnitude_bins']}")
    return ops
