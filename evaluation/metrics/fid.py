"""The Fréchet distance between two feature sets, ‖μ₁−μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½), with scipy's sqrtm.

CMIGBench's aFID feeds 2048-d Inception-v3 pool features (pytorch-fid). Both maintained Inception FID packages
(pytorch-fid, torch-fidelity, and so torchmetrics' default FID) import torchvision, which this project does not
install; so the features come from a pluggable extractor, CLIP's image tower by default. Numbers from it are a
CLIP-feature FID: comparable between methods scored the same way, not with the paper's Inception values.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import linalg

FeatureExtractor = Callable[[list[Image.Image]], np.ndarray]
"""Maps n images to an (n, d) feature array."""

_EPS = 1e-6


def _stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError("features must be a non-empty (n, d) array")
    mu = features.mean(axis=0)
    if len(features) < 2:  # one sample has no spread; np.cov would give NaN
        return mu, np.zeros((features.shape[1], features.shape[1]))
    return mu, np.cov(features, rowvar=False)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to feature sets `a` (n, d) and `b` (m, d)."""
    mu1, sigma1 = _stats(a)
    mu2, sigma2 = _stats(b)
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # small sets give singular covariances: nudge both diagonals, as FID implementations commonly do
        offset = np.eye(sigma1.shape[0]) * _EPS
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real  # numerical noise from sqrtm of a (near-)singular product
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        result = linalg.sqrtm(matrix)
    return result[0] if isinstance(result, tuple) else result


def fid_of_images(reference: list[Image.Image], generated: list[Image.Image], features: FeatureExtractor) -> float:
    return frechet_distance(features(reference), features(generated))
