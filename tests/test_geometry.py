"""Angular compactness and spread against hand-worked cases and a brute-force float64 computation."""

from __future__ import annotations

import math

import pytest
import torch

from heatup_lib.geometry import (angular_summary, centre_angles, class_centres, class_compactness,
                                 class_spread, sample_angles, unit_angle)


def _brute(features: torch.Tensor, labels: torch.Tensor) -> dict:
    """Plain-Python float64 reference: loops, math.acos, no vectorisation."""
    feats = [[float(v) for v in row] for row in features.double()]
    labs = [int(v) for v in labels]

    def unit(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    def angle(a, b):
        c = sum(x * y for x, y in zip(a, b))
        return math.acos(max(-1.0, min(1.0, c)))

    classes = sorted(set(labs))
    centres = {}
    for c in classes:
        members = [unit(f) for f, l in zip(feats, labs) if l == c]
        mean = [sum(col) / len(members) for col in zip(*members)]
        centres[c] = unit(mean)
    compact = {c: sum(angle(unit(f), centres[c]) for f, l in zip(feats, labs) if l == c) / labs.count(c)
               for c in classes}
    pairs = [angle(centres[a], centres[b]) for i, a in enumerate(classes) for b in classes[i + 1:]]
    nearest = {a: min(angle(centres[a], centres[b]) for b in classes if b != a) for a in classes}
    return {"classes": classes, "centres": centres, "compact": compact, "min": min(pairs),
            "mean": sum(pairs) / len(pairs), "nearest": nearest}


def _clustered(num: int, dim: int, num_classes: int, spread: float, seed: int,
               dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Random class centres plus Gaussian noise, random norms: a realistic embedding cloud."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    labels = torch.randint(0, num_classes, (num,), generator=g)
    labels[:num_classes] = torch.arange(num_classes)  # every class present
    feats = centres[labels] + spread * torch.randn(num, dim, generator=g, dtype=torch.float64)
    feats = feats * torch.empty(num, 1, dtype=torch.float64).uniform_(0.1, 10.0, generator=g)
    return feats.to(dtype), labels


def _deg(v) -> float:
    return math.degrees(float(v))


def test_hand_worked_2d():
    # Class 0 at 0 deg +- 10 deg, class 1 at 90 deg +- 20 deg, class 2 at 180 deg exactly (two points).
    angles_deg = [-10.0, 10.0, 70.0, 110.0, 180.0, 180.0]
    lengths = [1.0, 3.0, 0.5, 2.0, 1.0, 7.0]  # norms must not matter
    feats = torch.tensor([[r * math.cos(math.radians(a)), r * math.sin(math.radians(a))]
                          for a, r in zip(angles_deg, lengths)], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    classes, compact = class_compactness(feats, labels)
    assert classes.tolist() == [0, 1, 2]
    assert [_deg(v) for v in compact] == pytest.approx([10.0, 20.0, 0.0], abs=1e-9)
    spread = class_spread(feats, labels)
    assert _deg(spread["min"]) == pytest.approx(90.0, abs=1e-9)
    assert _deg(spread["mean"]) == pytest.approx((90 + 180 + 90) / 3, abs=1e-9)
    assert [_deg(v) for v in spread["nearest"]] == pytest.approx([90.0, 90.0, 90.0], abs=1e-9)
    summary = angular_summary(feats, labels)
    assert summary == pytest.approx({"compactness": 10.0, "compactness_max": 20.0,
                                     "spread_min": 90.0, "spread_mean": 120.0}, abs=1e-9)
    rad = angular_summary(feats, labels, degrees=False)
    assert rad["spread_min"] == pytest.approx(math.pi / 2, abs=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 2e-5)])
@pytest.mark.parametrize("dim,num_classes,noise", [(2, 10, 0.3), (8, 5, 0.8), (64, 20, 2.0)])
def test_matches_brute_force(dim, num_classes, noise, dtype, tol):
    feats, labels = _clustered(300, dim, num_classes, noise, seed=dim + num_classes, dtype=dtype)
    ref = _brute(feats, labels)
    classes, compact = class_compactness(feats, labels)
    assert compact.dtype == dtype
    assert classes.tolist() == ref["classes"]
    assert compact.double().tolist() == pytest.approx([ref["compact"][c] for c in ref["classes"]], abs=tol)
    _, centres = class_centres(feats, labels)
    for c, row in zip(ref["classes"], centres.double()):
        assert row.tolist() == pytest.approx(ref["centres"][c], abs=tol)
    spread = class_spread(feats, labels)
    assert float(spread["min"]) == pytest.approx(ref["min"], abs=tol)
    assert float(spread["mean"]) == pytest.approx(ref["mean"], abs=tol)
    assert spread["nearest"].double().tolist() == pytest.approx([ref["nearest"][c] for c in ref["classes"]], abs=tol)


def test_arbitrary_labels_and_order():
    # Zero-shot style labels 5..9 in shuffled order give the same numbers as relabelled 0..4.
    feats, labels = _clustered(200, 2, 5, 0.4, seed=3)
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    classes, compact = class_compactness(feats[perm], labels[perm] + 5)
    assert classes.tolist() == [5, 6, 7, 8, 9]
    _, compact_ref = class_compactness(feats, labels)
    torch.testing.assert_close(compact, compact_ref)
    angles = sample_angles(feats[perm], labels[perm] + 5)
    torch.testing.assert_close(angles, sample_angles(feats, labels)[perm])


def test_rotation_and_scale_invariance():
    feats, labels = _clustered(150, 6, 4, 0.5, seed=11)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    scales = torch.linspace(0.01, 100.0, 150, dtype=torch.float64).unsqueeze(1)
    a = angular_summary(feats, labels)
    b = angular_summary((feats @ q) * scales, labels)
    assert a == pytest.approx(b, abs=1e-9)


def test_small_angles_are_accurate_in_float32():
    # Two points at +-1e-4 rad around a centre: acos(cos) in float32 would give 0 or ~3e-4.
    eps = 1e-4
    feats = torch.tensor([[math.cos(eps), math.sin(eps)], [math.cos(eps), -math.sin(eps)],
                          [0.0, 1.0], [0.0, 1.0]], dtype=torch.float32)
    _, compact = class_compactness(feats, torch.tensor([0, 0, 1, 1]))
    assert float(compact[0]) == pytest.approx(eps, rel=1e-3)
    assert float(compact[1]) == 0.0


def test_unit_angle_and_centre_angles():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    assert unit_angle(a[0], a[1]).item() == pytest.approx(math.pi / 2)
    assert unit_angle(a[0], a[2]).item() == pytest.approx(math.pi)
    m = centre_angles(a)
    expected = torch.tensor([[0, 0.5, 1], [0.5, 0, 0.5], [1, 0.5, 0]], dtype=torch.float64) * math.pi
    torch.testing.assert_close(m, expected)


def test_degenerate_class_is_nan():
    # Class 0's unit vectors cancel out: it has no centre direction.
    feats = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    classes, compact = class_compactness(feats, torch.tensor([0, 0, 1, 1]))
    assert math.isnan(float(compact[0])) and not math.isnan(float(compact[1]))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="features must have shape"):
        class_compactness(torch.zeros(5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must have shape"):
        class_compactness(torch.ones(5, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be integers"):
        class_compactness(torch.ones(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2 classes"):
        class_spread(torch.ones(3, 2), torch.zeros(3, dtype=torch.long))
