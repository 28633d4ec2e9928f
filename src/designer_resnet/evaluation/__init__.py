"""Evaluate Model: classification metrics of scored data."""
