"""ResNet: choose a ResNet/ResNeXt/Wide ResNet architecture -> UntrainedModelDirectory."""

from __future__ import annotations

import sys

from ..errors import run_entry
from ._untrained import create_from_command_line


def main(argv=None) -> None:
    create_from_command_line("resnet", argv)


if __name__ == "__main__":
    sys.exit(run_entry(main))
