"""Local pipeline runner: the same pipeline YAML, run on this machine."""
