import pytest
import torch

from studio.engine.cluster import CHUNK, HIST_BINS, kmeans_1d, zero_code
from studio.engine.prune import BUCKETED_FROM, kth_smallest_counted, prune_mask


def test_unstructured_removes_smallest_magnitudes():
    w = torch.tensor([[0.1, -0.5, 0.2, 0.9], [-0.05, 0.3, -0.7, 0.0]])
    keep = prune_mask(w, 0.5, "unstructured")
    assert keep.sum() == 4
    assert keep.tolist() == [[False, True, False, True], [False, True, True, False]]


def test_structured_removes_whole_channels_by_l2_norm():
    w = torch.tensor([[1.0, 1.0], [0.1, 0.1], [2.0, 0.0], [0.0, 0.2]])
    keep = prune_mask(w, 0.5, "structured")
    assert keep.all(dim=1).tolist() == [True, False, True, False]
    assert (keep.all(dim=1) | ~keep.any(dim=1)).all()


def test_two_four_keeps_two_largest_of_every_four():
    torch.manual_seed(0)
    w = torch.randn(6, 16)
    keep = prune_mask(w, 0.5, "2:4")
    groups = keep.reshape(6, 4, 4)
    assert torch.all(groups.sum(dim=2) == 2)
    mags = w.abs().reshape(6, 4, 4)
    kept_min = torch.where(groups, mags, torch.inf).min(dim=2).values
    dropped_max = torch.where(~groups, mags, -torch.inf).max(dim=2).values
    assert torch.all(kept_min >= dropped_max)


def test_nm_pads_ragged_fan_in():
    keep = prune_mask(torch.randn(3, 10), 0.5, "2:4")
    assert keep.shape == (3, 10) and keep.sum() == 3 * (2 + 2 + 2)


def test_no_pruning_returns_none():
    assert prune_mask(torch.randn(2, 2), 0.0, "unstructured") is None


def test_kmeans_linear_init_finds_clusters():
    values = torch.cat([torch.full((50,), -1.0), torch.full((30,), 0.5), torch.full((20,), 2.0)])
    centroids, index = kmeans_1d(values, 3)
    assert torch.allclose(centroids, torch.tensor([-1.0, 0.5, 2.0]))
    assert index.dtype == torch.uint8  # index with .long(): torch reads a uint8 index as a mask
    assert torch.equal(centroids[index.long()], values)


def test_kmeans_pinned_zero_stays_zero():
    torch.manual_seed(0)
    values = torch.randn(1000) + 3.0
    centroids, _ = kmeans_1d(values, 4, pin_zero=True)
    assert (centroids == 0.0).sum() == 1
    assert centroids.numel() == 4


@pytest.mark.parametrize("kind", ["normal", "ties", "half zeros"])
def test_bucketed_kth_smallest_equals_a_selection(kind):
    torch.manual_seed(0)
    n = 3 * BUCKETED_FROM + 17
    x = torch.randn(n).abs()
    if kind == "ties":
        x = (x * 10).round() / 10
    elif kind == "half zeros":
        x[: n // 2] = 0.0
    for k in (1, 2, n // 3, n // 2, n // 2 + 1, n - 1, n):
        kth, below, equal = kth_smallest_counted(x, k)
        assert kth.item() == torch.kthvalue(x, k).values.item()
        assert (below, equal) == (int((x < kth).sum()), int((x == kth).sum()))


@pytest.mark.parametrize("n", [1000, 3 * (1 << 20) + 17])  # a plain selection; chunks of magnitudes (the last partial)
def test_kth_smallest_magnitude_equals_a_selection_of_the_absolute_values(n):
    torch.manual_seed(1)
    x = (torch.randn(n) * 10).round() / 10  # signed, many ties, -0.0 and 0.0
    mag = x.abs()
    for k in (1, n // 3, n // 2, n):
        kth, below, equal = kth_smallest_counted(x, k, absolute=True)
        assert kth.item() == torch.kthvalue(mag, k).values.item()
        assert (below, equal) == (int((mag < kth).sum()), int((mag == kth).sum()))


def test_unstructured_pruning_of_a_large_layer_removes_exactly_the_ratio():
    torch.manual_seed(1)
    w = (torch.randn(512, 300) * 8).round() / 8  # many ties at the threshold
    keep = prune_mask(w, 0.37, "unstructured")
    assert int((~keep).sum()) == round(0.37 * w.numel())
    assert float(w.abs()[~keep].max()) <= float(w.abs()[keep].min())


@pytest.mark.parametrize("n", [1000, 5 * BUCKETED_FROM, 2 * (1 << 20) + 5])  # small, bucketed, ties over chunks
def test_unstructured_pruning_keeps_ties_by_position(n):
    w = torch.ones(1, n)  # every weight ties at the threshold
    w[0, ::7] = 2.0
    keep = prune_mask(w, 0.5, "unstructured").flatten()
    k = round(0.5 * n)
    assert int((~keep).sum()) == k
    ones = torch.nonzero(w.flatten() == 1.0).flatten()
    assert not keep[ones[:k]].any() and keep[ones[k:]].all()  # the first ties by position go


def _gathered(values, keep, k):
    """kmeans of the kept values, index scattered with the zero code: the reference."""
    centroids, kept_index = kmeans_1d(values[keep], k, pin_zero=True)
    index = torch.full((values.numel(),), zero_code(centroids), dtype=kept_index.dtype)
    index[keep] = kept_index
    return centroids, index


@pytest.mark.parametrize("case", ["normal", "positive", "few kept", "ties at zero", "over chunks"])
def test_kmeans_over_a_keep_mask_equals_clustering_the_kept_values(case):
    torch.manual_seed(3)
    n = 2 * CHUNK + 11 if case == "over chunks" else 4 * HIST_BINS + 11
    w = torch.randn(n) * 0.05
    if case == "positive":  # the array's min is a pruned zero: the gathering path
        w = w.abs() + 0.01
    keep = prune_mask(w.reshape(1, -1), 0.97 if case == "few kept" else 0.4, "unstructured").flatten()
    if case == "ties at zero":
        w[: n // 10] = 0.0
        keep[: n // 20] = True  # kept weights that are exactly zero
    pruned = w * keep
    ref_centroids, ref_index = _gathered(pruned, keep, 32)
    for values in (pruned, w):  # the pruned weights read as zeros whatever they hold
        centroids, index = kmeans_1d(values, 32, pin_zero=True, keep=keep)
        assert torch.equal(centroids, ref_centroids)
        assert torch.equal(index, ref_index)


def test_kmeans_over_a_keep_mask_needs_the_pinned_zero():
    with pytest.raises(ValueError, match="pin_zero=True"):
        kmeans_1d(torch.randn(100), 4, keep=torch.ones(100, dtype=torch.bool))
