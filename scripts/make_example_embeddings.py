"""Regenerate the example embeddings shipped in src/contrasphere/examples (needs scikit-learn).

The example is real data that needs no download: scikit-learn's bundled 8x8 handwritten digits (1,797 images)
as raw 64-d pixel vectors, and as positives the same images shifted by one pixel in a random direction (a seeded
"augmentation"). The vectors are stored raw (not normalised) so that `contrasphere metrics --example` also shows
how the metrics treat embeddings that are off the sphere.

    python scripts/make_example_embeddings.py
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parent.parent / "src" / "contrasphere" / "examples"


def shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(image)
    h, w = image.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def main() -> None:
    images = load_digits().images.astype(np.float32)  # (1797, 8, 8), values 0..16
    rng = np.random.default_rng(0)
    moves = [(0, 1), (0, -1), (1, 0), (-1, 0)]
    shifted = np.stack([shift(img, *moves[rng.integers(4)]) for img in images])
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / "digits.npy", images.reshape(len(images), -1))
    np.save(OUT / "digits_shifted.npy", shifted.reshape(len(images), -1))
    np.save(OUT / "digits_labels.npy", load_digits().target.astype(np.int8))
    print(f"wrote {OUT / 'digits.npy'} and {OUT / 'digits_shifted.npy'}: {images.shape[0]} x 64 each")


if __name__ == "__main__":
    main()
