"""Spherical Embedding Expansion: simplex, per-sample expansion, schedules (docs/algorithms.md section 2)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dml_core.expansion import (
    class_centroids,
    expand_around_centers,
    mmd_centers,
    see_threshold,
    select_for_expansion,
    spherical_expansion,
)

FAST = settings(max_examples=50, deadline=None)


def test_mmd_centers_worked_example():
    expected = torch.tensor([[1.0, 0.0], [-0.5, 3**0.5 / 2], [-0.5, -(3**0.5) / 2]], dtype=torch.float64)
    torch.testing.assert_close(mmd_centers(3, 2), expected)
    # Extra dimensions are zero-padded; the simplex still spans only L - 1 of them.
    torch.testing.assert_close(mmd_centers(3, 4)[:, :2], expected)
    assert mmd_centers(3, 4)[:, 2:].abs().max() < 1e-7


@pytest.mark.parametrize("num_points", [2, 3, 5, 9, 17, 33])
def test_mmd_centers_form_a_regular_simplex(num_points):
    mu = mmd_centers(num_points, num_points)
    gram = mu @ mu.T
    off = torch.full_like(gram, -1.0 / (num_points - 1)).fill_diagonal_(1.0)
    torch.testing.assert_close(gram, off, atol=1e-10, rtol=0)
    torch.testing.assert_close(mu.sum(0), torch.zeros(num_points, dtype=torch.float64), atol=1e-10, rtol=0)


def test_mmd_centers_rejects_too_few_dimensions():
    with pytest.raises(ValueError, match="need dim >= 4"):
        mmd_centers(5, 3)


def test_spherical_expansion_worked_example():
    z = torch.tensor([[0.6, 0.8, 0.0, 0.0]], dtype=torch.float64)
    w = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    points = spherical_expansion(z, w, 1, torch.Generator().manual_seed(0))
    torch.testing.assert_close(points, torch.tensor([[[0.6, -0.8, 0.0, 0.0]]], dtype=torch.float64))


@FAST
@given(
    n=st.integers(1, 10),
    extra_dims=st.integers(0, 12),
    num=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
    cos_scale=st.floats(-1.0, 1.0),
)
def test_spherical_expansion_invariants(n, extra_dims, num, seed, cos_scale):
    d = n + 2 + extra_dims
    g = torch.Generator().manual_seed(seed)
    w = F.normalize(torch.randn(num, d, generator=g, dtype=torch.float64), dim=1)
    noise = F.normalize(torch.randn(num, d, generator=g, dtype=torch.float64), dim=1)
    # Mix towards +-w so the cosines c = z.w range from nearly -1 through ~0 to nearly 1.
    z = F.normalize(noise + 20 * cos_scale * w, dim=1)
    p = spherical_expansion(z, w, n, g)
    assert p.shape == (num, n, d)
    c = (z * w).sum(1)
    torch.testing.assert_close(p.norm(dim=-1), torch.ones(num, n, dtype=torch.float64))  # on the sphere
    torch.testing.assert_close((p * w[:, None]).sum(-1), c[:, None].expand(num, n))  # same cosine to w
    inner = p @ p.transpose(1, 2)
    expected = (c**2 - (1 - c**2) / n)[:, None, None].expand(num, n, n).clone()
    expected.diagonal(dim1=1, dim2=2).fill_(1.0)
    torch.testing.assert_close(inner, expected)  # a regular simplex around M = c w
    centroid = (z + p.sum(1)) / (n + 1)
    torch.testing.assert_close(centroid, c[:, None] * w)


def test_spherical_expansion_keeps_z_when_it_is_the_centre():
    w = F.normalize(torch.randn(3, 6), dim=1)
    z = w.clone().requires_grad_()
    p = spherical_expansion(z, w, 3)
    torch.testing.assert_close(p, w[:, None].expand(3, 3, 6))
    p.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_spherical_expansion_needs_n_plus_two_dimensions():
    z = F.normalize(torch.randn(2, 5), dim=1)
    with pytest.raises(ValueError, match=r"n=4 .* >= n \+ 2 = 6, got 5"):
        spherical_expansion(z, z, 4)


def test_spherical_expansion_is_random_but_reproducible():
    z, w = F.normalize(torch.randn(2, 2, 8), dim=-1)
    a = spherical_expansion(z, w, 3, torch.Generator().manual_seed(5))
    b = spherical_expansion(z, w, 3, torch.Generator().manual_seed(5))
    c = spherical_expansion(z, w, 3, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize("epoch, expected", [(0, 0.04), (25, 0.0927), (50, 0.22), (75, 0.3473), (99, 0.3999)])
def test_threshold_type1_worked_values(epoch, expected):
    assert see_threshold(epoch, 100, threshold_type=1, threshold_max=0.4, threshold_min=0.04) == pytest.approx(expected, abs=1e-4)


def test_threshold_type1_caps_the_schedule_at_200_epochs():
    assert see_threshold(300, 400, 1) == pytest.approx(see_threshold(200, 200, 1))
    assert see_threshold(100, 400, 1) == pytest.approx(see_threshold(100, 200, 1))


def test_threshold_type0_decreases_to_min_and_respects_lower_bound():
    values = [see_threshold(e, 10, 0, 0.4, 0.04) for e in range(11)]
    assert values[0] == pytest.approx(0.4) and values[-1] == pytest.approx(0.04)
    assert values[5] == pytest.approx(0.22)
    assert all(a > b for a, b in zip(values, values[1:]))
    assert see_threshold(10, 10, 0, 0.4, 0.04, lower_bound=0.1) == pytest.approx(0.1)


def test_select_for_expansion():
    cos = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.8, 0.0, 0.6, 0.4])
    assert select_for_expansion(cos, 0.3, threshold_type=1).nonzero().flatten().tolist() == [1, 4, 6]
    assert select_for_expansion(cos, 0.04, threshold_type=1).sum() == 0  # round(0.4) = 0
    assert select_for_expansion(cos, 0.55, threshold_type=0).nonzero().flatten().tolist() == [1, 4, 6, 8]


def test_class_centroids():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    labels = torch.tensor([3, 3, 7, 7])
    expected = torch.tensor([[1.0, 1.0], [1.0, 1.0], [-1.0, -1.0], [-1.0, -1.0]]) / 2**0.5
    torch.testing.assert_close(class_centroids(z, labels), expected)


def test_expand_around_centers_selects_and_labels():
    g = torch.Generator().manual_seed(0)
    centers = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    z = F.normalize(centers + torch.linspace(0.1, 3.0, 6)[:, None] * torch.randn(6, 8, generator=g), dim=1)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    points, point_labels = expand_around_centers(z, centers, labels, 3, threshold=0.5, threshold_type=1, generator=g)
    closest = (z * centers).sum(1).topk(3).indices.sort().values
    assert points.shape == (9, 8)
    assert point_labels.tolist() == labels[closest].repeat_interleave(3).tolist()
    cos = (points * centers[point_labels]).sum(1)
    torch.testing.assert_close(cos, (z * centers).sum(1)[point_labels])
    empty, empty_labels = expand_around_centers(z, centers, labels, 3, threshold=2.0, threshold_type=0)
    assert empty.shape == (0, 8) and empty_labels.numel() == 0
