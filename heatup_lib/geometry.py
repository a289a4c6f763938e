"""Angular geometry of embeddings on the hypersphere: how compact each class is, how far apart class centres are.

Every feature is L2-normalised first, so only directions matter. For a class ``c`` with
normalised features ``f_hat_i``, its *centre direction* is the normalised mean
``mu_c = mean_i(f_hat_i) / ||mean_i(f_hat_i)||``. Then

- the *compactness* of class ``c`` is the mean angle between its features and ``mu_c``
  (small = compact; 0 when all features of the class point the same way);
- the *spread* between classes is the set of angles between centre directions ``mu_a, mu_b``
  (large = well separated): its minimum over pairs, its mean, and each class's nearest centre.

Angles are in radians and computed as ``2 * atan2(||a - b||, ||a + b||)`` for unit vectors,
which stays accurate for tiny angles where ``acos`` of a cosine near 1 loses precision.
A class whose normalised features sum to (almost) zero has no centre direction: its centre
and every angle involving it are NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["unit_angle", "class_centres", "sample_angles", "class_compactness", "centre_angles",
           "class_spread", "angular_summary"]

_EPS = 1e-12


def _as_tensors(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Check shapes and return (features as float (N, D), labels as int64 (N,)) on one device."""
    features = torch.as_tensor(features)
    labels = torch.as_tensor(labels, device=features.device)
    if features.dim() != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"features must have shape (N, D) with N, D >= 1, got {tuple(features.shape)}")
    if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"labels must have shape ({features.shape[0]},) to match features, got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if not features.dtype.is_floating_point:
        features = features.float()
    return features, labels.long()


def unit_angle(a: Tensor, b: Tensor) -> Tensor:
    """Angle in radians between unit vectors ``a`` and ``b`` along the last dimension (broadcasting)."""
    return 2.0 * torch.atan2(torch.linalg.vector_norm(a - b, dim=-1), torch.linalg.vector_norm(a + b, dim=-1))


def class_centres(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Return (classes (C,) sorted, centre directions (C, D)): the normalised mean of each class's normalised features."""
    features, labels = _as_tensors(features, labels)
    classes, inverse = torch.unique(labels, sorted=True, return_inverse=True)
    unit = F.normalize(features, dim=1)
    sums = torch.zeros(len(classes), features.shape[1], dtype=unit.dtype, device=unit.device)
    sums.index_add_(0, inverse, unit)  # (C, D): sum of the unit vectors of each class
    norms = torch.linalg.vector_norm(sums, dim=1, keepdim=True)
    centres = sums / norms.clamp_min(_EPS)
    counts = torch.bincount(inverse, minlength=len(classes)).unsqueeze(1).to(unit.dtype)
    # A mean resultant length ~0 means the class has no direction.
    undefined = norms / counts < 1e-6
    centres = torch.where(undefined, torch.full_like(centres, float("nan")), centres)
    return classes, centres


def sample_angles(features: Tensor, labels: Tensor) -> Tensor:
    """Angle in radians (N,) between each normalised feature and the centre direction of its own class."""
    features, labels = _as_tensors(features, labels)
    classes, centres = class_centres(features, labels)
    inverse = torch.searchsorted(classes, labels)
    return unit_angle(F.normalize(features, dim=1), centres[inverse])


def class_compactness(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Return (classes (C,), mean angle in radians (C,) of each class's features to its centre direction)."""
    features, labels = _as_tensors(features, labels)
    classes, inverse = torch.unique(labels, sorted=True, return_inverse=True)
    angles = sample_angles(features, labels)
    sums = torch.zeros(len(classes), dtype=angles.dtype, device=angles.device).index_add_(0, inverse, angles)
    counts = torch.bincount(inverse, minlength=len(classes)).to(angles.dtype)
    return classes, sums / counts


def centre_angles(centres: Tensor) -> Tensor:
    """Pairwise angles in radians (C, C) between unit centre directions (C, D); the diagonal is 0."""
    if centres.dim() != 2:
        raise ValueError(f"centres must have shape (C, D), got {tuple(centres.shape)}")
    # cdist without the matmul shortcut: exact differences, and (C, C) memory rather than (C, C, D).
    diff = torch.cdist(centres, centres, compute_mode="donot_use_mm_for_euclid_dist")
    summ = torch.cdist(centres, -centres, compute_mode="donot_use_mm_for_euclid_dist")
    angles = 2.0 * torch.atan2(diff, summ)
    eye = torch.eye(len(centres), dtype=torch.bool, device=centres.device)
    return angles.masked_fill(eye, 0.0)


def class_spread(features: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Angles between class centre directions: ``min`` and ``mean`` over pairs, ``nearest`` (C,) per class, ``classes`` (C,)."""
    features, labels = _as_tensors(features, labels)
    classes, centres = class_centres(features, labels)
    if len(classes) < 2:
        raise ValueError(f"spread needs at least 2 classes, got {len(classes)} (classes {classes.tolist()})")
    angles = centre_angles(centres)  # (C, C)
    eye = torch.eye(len(classes), dtype=torch.bool, device=angles.device)
    nearest = angles.masked_fill(eye, math.inf).amin(dim=1)
    upper = torch.triu(torch.ones_like(eye), diagonal=1)
    pairs = angles[upper]  # each unordered pair once
    return {"classes": classes, "min": pairs.min(), "mean": pairs.mean(), "nearest": nearest}


def angular_summary(features: Tensor, labels: Tensor, degrees: bool = True) -> dict[str, float]:
    """Scalar summary: ``compactness`` (mean over classes), ``compactness_max`` (worst class), ``spread_min``, ``spread_mean``."""
    _, compact = class_compactness(features, labels)
    spread = class_spread(features, labels)
    scale = 180.0 / math.pi if degrees else 1.0
    return {
        "compactness": float(compact.mean()) * scale,
        "compactness_max": float(compact.max()) * scale,
        "spread_min": float(spread["min"]) * scale,
        "spread_mean": float(spread["mean"]) * scale,
    }
