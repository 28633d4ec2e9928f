"""The trained model as an MLflow model: raw image bytes in, class probabilities and labels out."""
