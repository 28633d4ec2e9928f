"""Architecture registry, weights loading, and model directories."""
