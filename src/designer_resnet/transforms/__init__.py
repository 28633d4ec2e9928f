"""Image transformations: the op list format and its torchvision pipelines."""
