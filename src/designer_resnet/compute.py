"""How the network runs on its device: precision, memory layout and compilation, chosen once for a process.

Train PyTorch Model and Score Image Model take `precision` and `memory_format`
(and Train `compile`) as parameters. `auto` is what suits the device: bf16
autocast and channels_last on CUDA, fp32 and the default layout on a CPU.
Every choice runs on a CPU too, so the lines a GPU takes are the lines the
tests take.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import UserError

log = logging.getLogger(__name__)

AUTO = "auto"
PRECISIONS = (AUTO, "bf16", "fp32")
MEMORY_FORMATS = (AUTO, "channels_last", "contiguous")
# Where torch.compile keeps its generated code; pointed at a run's own temporary folder unless the user set them.
COMPILE_CACHE_VARIABLES = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def default_device(index: int = 0, *, dev: Path = Path("/dev")) -> torch.device:
    """CUDA device `index` when PyTorch can use one, else the CPU, said loudly when a GPU is there but unusable.

    A node whose NVIDIA driver is older than the CUDA that torch was built for
    (docs/environment.md) would otherwise train on the CPU without a word.
    """
    if torch.cuda.is_available():
        return torch.device("cuda", index)
    if any(dev.glob("nvidia[0-9]*")):
        log.warning("an NVIDIA GPU is present but PyTorch cannot use it: its CUDA %s needs an NVIDIA driver of "
                    "branch R580 or newer (nvidia-smi shows the node's; see docs/environment.md); running on the "
                    "CPU, many times slower", torch.version.cuda)
    return torch.device("cpu")


def choice(name: str, value: str, allowed: tuple) -> str:
    """`value` when it is one of `allowed`; else the one line naming the parameter and its values."""
    if value not in allowed:
        raise UserError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class Compute:
    """A device and how the network runs there; `resolve` turns the parameters' values into one."""

    device: torch.device
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    @classmethod
    def resolve(cls, device: torch.device, *, precision: str = AUTO, memory_format: str = AUTO,
                compile: bool = False) -> "Compute":
        cuda = device.type == "cuda"
        precision = choice("precision", precision, PRECISIONS)
        memory_format = choice("memory_format", memory_format, MEMORY_FORMATS)
        bf16 = cuda if precision == AUTO else precision == "bf16"
        channels_last = cuda if memory_format == AUTO else memory_format == "channels_last"
        return cls(device, bf16, channels_last, bool(compile))

    @property
    def precision(self) -> str:
        """The precision as resolved: "bf16" or "fp32" (what a run's identity records, whatever `auto` became)."""
        return "bf16" if self.bf16 else "fp32"

    def autocast(self):
        """The forward pass's precision: bf16 autocast (weights and the loss stay fp32) or plain fp32."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def place(self, model: nn.Module) -> nn.Module:
        """The network on the device, in the chosen layout (in place, as `Module.to`)."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    @property
    def memory_format(self) -> torch.memory_format:
        """The network's layout as torch names it."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def layout(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch on the device in the network's layout (itself when it is laid out so already)."""
        return batch.contiguous(memory_format=self.memory_format)

    @contextlib.contextmanager
    def compilation(self):
        """The span of a run that compiles: checked to work here first, its caches in a folder removed after.

        A machine where torch.compile cannot work (no C++ compiler for a CPU,
        no Triton for a GPU) is one line before any training, not a traceback
        at the first step. Nothing happens when compilation is off.
        """
        if not self.compile:
            yield
            return
        saved = {name: os.environ.get(name) for name in COMPILE_CACHE_VARIABLES}
        with tempfile.TemporaryDirectory(prefix="designer-resnet-compile-") as scratch:
            for name in COMPILE_CACHE_VARIABLES:
                os.environ.setdefault(name, os.path.join(scratch, name.lower()))
            try:
                self._check_compiler()
                yield
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value

    def _check_compiler(self) -> None:
        try:
            torch.compile(lambda x: torch.relu(x) * 2)(torch.ones(4, device=self.device))
        except Exception as exc:  # inductor's errors have no common base class across versions
            first = " ".join(str(exc).split())[:200]
            raise UserError(f"compile: torch.compile does not work on this machine ({exc.__class__.__name__}: "
                            f"{first}); set compile to false") from None

    def compiled(self, model: nn.Module) -> nn.Module:
        """`torch.compile(model)` when compilation was asked for; the module itself otherwise."""
        if not self.compile:
            return model
        log.info("compiling the network with torch.compile (the first steps are slow while it compiles)")
        return torch.compile(model)

    def describe(self) -> str:
        return (f"{self.device.type}, {'bf16 autocast' if self.bf16 else 'fp32'}, "
                f"{'channels_last' if self.channels_last else 'contiguous'}{', compiled' if self.compile else ''}")
