"""Built-in sample data: scikit-learn's handwritten digits as an image folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(folder: str | Path, *, size: int = 32, limit: int | None = None,
                 test_folder: str | Path | None = None, test_every: int = 5) -> int:
    """Write the 1,797 digits as `folder/<digit>/<n>.png` (size × size RGB); returns the count.

    With `test_folder`, every `test_every`-th image goes there instead (a held-out test set).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = Path(folder)
    count = 0
    for n, (pixels, target) in enumerate(zip(digits.images, digits.target)):
        if limit is not None and n >= limit:
            break
        # Values are 0..16, ink high; scale to 0..255 dark ink on white paper.
        gray = (255 - pixels * (255 / 16)).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(gray, mode="L").resize((size, size), Image.Resampling.BILINEAR).convert("RGB")
        root = Path(test_folder) if test_folder is not None and n % test_every == 0 else folder
        (root / str(target)).mkdir(parents=True, exist_ok=True)
        image.save(root / str(target) / f"{n:04d}.png")
        count += 1
    return count
