"""Score Image Model: batch inference with a trained model."""
