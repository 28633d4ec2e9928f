"""Azure ML designer components for image classification with ResNet."""

__version__ = "0.1.0"
