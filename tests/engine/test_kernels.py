"""Per-weight kernels: fake quantization, activation range methods, MSE clipping, k-means,
and what a compressed weight holds in memory."""

import math

import numpy as np
import pytest
import torch

from studio.engine import LayerSpec
from studio.engine.activations import ActQParams, ActStats, fake_quant, qparams_for_range, range_kl, range_mse
from studio.engine.cluster import HIST_BINS, kmeans_1d
from studio.engine.compress import compress_view, sqnr_db
from studio.engine.mse_clip import EXACT_WEIGHTS
from studio.engine.quantize import MSE_GRID, _minmax_params, choose_params, dequantize_codes, quantize_codes


def reference_fake_quant(x: torch.Tensor, q: ActQParams) -> torch.Tensor:
    """The formula the ONNX export reproduces, one operation at a time."""
    codes = torch.clamp(torch.round(x / q.scale) + q.zero_point, q.qmin, q.qmax)
    return (codes - q.zero_point) * q.scale


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({torch.float32: torch.int32, torch.float16: torch.int16, torch.float64: torch.int64}[t.dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_fake_quant_is_bit_identical_to_the_formula(dtype):
    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        x = torch.randn(20_000, generator=g) * 10.0 ** int(torch.randint(-3, 3, (1,), generator=g))
        lo, hi = float(x.min()) * float(torch.rand(1, generator=g)), float(x.max()) * float(torch.rand(1, generator=g))
        for bits in (8, 16):
            q = qparams_for_range(lo, hi, bits)
            x[:64] = (torch.arange(64) - 32 + 0.5) * q.scale  # exact ties: round half to even
            x[64:68] = torch.tensor([-0.0, -q.scale / 4, 1e30, -float("inf")])  # -0.0 must come back +0.0
            xd = x.to(dtype)
            ours, ref = fake_quant(xd, q), reference_fake_quant(xd, q)
            assert torch.equal(_bits(ours), _bits(ref)), (trial, bits, dtype)


def test_fake_quant_does_not_touch_its_input():
    x = torch.randn(1000)
    before = x.clone()
    fake_quant(x, qparams_for_range(-1.0, 1.0, 8))
    assert torch.equal(x, before)


# -- activation ranges: the vectorized methods pick what the per-candidate loops picked --
def loop_range_mse(stats: ActStats, bits: int) -> tuple[float, float]:
    centers = torch.from_numpy(stats.centers())
    counts = torch.from_numpy(stats.hist).double()
    best, best_err = (stats.lo, stats.hi), float("inf")
    for a in np.linspace(0.2, 1.0, 81):
        lo, hi = stats.lo * a, stats.hi * a
        q = qparams_for_range(lo, hi, bits)
        err = float((counts * (reference_fake_quant(centers, q) - centers) ** 2).sum())
        if err < best_err:
            best, best_err = (lo, hi), err
    return best


def loop_range_kl(stats: ActStats, bits: int) -> tuple[float, float]:
    centers = stats.centers()
    hist = stats.hist.astype(np.float64)
    levels = 2 ** min(bits, 8)
    best, best_kl = (stats.lo, stats.hi), float("inf")
    for a in np.linspace(0.2, 1.0, 81):
        lo, hi = stats.lo * a, stats.hi * a
        idx = np.flatnonzero((centers >= min(lo, 0)) & (centers <= max(hi, 0)))
        if len(idx) < levels:
            continue
        raw = hist[idx]
        p = raw.copy()
        p[0] += hist[: idx[0]].sum()
        p[-1] += hist[idx[-1] + 1 :].sum()
        q = np.zeros_like(p)
        for g in np.array_split(np.arange(len(raw)), levels):
            nonzero = raw[g] > 0
            if nonzero.any():
                q[g[nonzero]] = raw[g].sum() / nonzero.sum()
        mask = p > 0
        pn = p[mask] / p.sum()
        qn = np.maximum(q[mask] / max(q.sum(), 1e-12), 1e-12)
        kl = float((pn * np.log(pn / qn)).sum())
        if kl < best_kl:
            best, best_kl = (lo, hi), kl
    return best


def _activations():
    g = torch.Generator().manual_seed(1)
    yield torch.randn(50_000, generator=g)
    yield torch.relu(torch.randn(50_000, generator=g))  # one-sided, with a spike at 0
    yield torch.cat([torch.randn(100_000, generator=g), torch.tensor([40.0])])  # a rare outlier
    yield torch.rand(20_000, generator=g) + 3.0  # all positive, away from 0
    yield torch.randint(0, 4, (30_000,), generator=g).float()  # a few values, mostly empty bins
    yield torch.randn(5, generator=g)  # too few bins for any candidate


@pytest.mark.parametrize("case", range(6))
@pytest.mark.parametrize("bits", [8, 16])
def test_range_methods_match_the_loops(case, bits):
    x = list(_activations())[case]
    stats = ActStats()
    stats.observe_range(x)
    stats.observe_hist(x)
    assert range_mse(stats, bits) == loop_range_mse(stats, bits)
    assert range_kl(stats, bits) == loop_range_kl(stats, bits)


# -- MSE clipping ----------------------------------------------------------------------
def _row_errors(w: torch.Tensor, params) -> torch.Tensor:  # noqa: ANN001
    return ((dequantize_codes(quantize_codes(w, params), params) - w).double() ** 2).sum(dim=1)


def _grid_search(w: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """The best error per row over the same candidates, each quantized exactly."""
    lo, hi = torch.aminmax(w, dim=1)
    best = _row_errors(w, _minmax_params(lo, hi, bits, symmetric))
    for a in MSE_GRID[:-1].tolist():
        best = torch.minimum(best, _row_errors(w, _minmax_params(lo * a, hi * a, bits, symmetric)))
    return best


@pytest.mark.parametrize(
    "bits,symmetric,rows,cols",
    [(8, True, 64, 3000), (4, True, 64, 3000), (3, False, 64, 3000), (8, False, 48, 3000), (6, False, 1, 100_000), (2, True, 1, 3000), (5, True, 16, 300)],
)
def test_mse_clipping_is_never_worse_than_minmax_and_near_the_exact_search(bits, symmetric, rows, cols):
    g = torch.Generator().manual_seed(bits)
    w = torch.distributions.Laplace(0.0, 1.0).sample((rows, cols)) + 0.3 * torch.randn(rows, 1, generator=g)
    w[:, :3] *= 4  # a few outliers per row
    mse = _row_errors(w, choose_params(w, bits, symmetric, "mse"))
    minmax = _row_errors(w, choose_params(w, bits, symmetric, "minmax"))
    exact = _grid_search(w, bits, symmetric)
    assert torch.all(mse <= minmax)
    assert float(mse.sum()) < float(minmax.sum())
    assert float(mse.sum()) <= 1.002 * float(exact.sum())  # the histogram's pick is all but the exact best
    if rows * cols <= EXACT_WEIGHTS:
        assert torch.equal(mse, exact)  # small weights are searched exactly


def test_mse_clipping_handles_zero_and_constant_rows():
    w = torch.zeros(3, 500)
    w[1] = 0.25
    w[2] = torch.linspace(-1, 1, 500)
    for symmetric in (True, False):
        p = choose_params(w, 4, symmetric, "mse")
        deq = dequantize_codes(quantize_codes(w, p), p)
        assert torch.isfinite(deq).all() and torch.all(deq[0] == 0)
        assert torch.all(_row_errors(w, p) <= _row_errors(w, choose_params(w, 4, symmetric, "minmax")))


# -- k-means ---------------------------------------------------------------------------
@pytest.mark.parametrize("n", [5000, HIST_BINS * 3])  # Lloyd on the values / on the histogram
def test_kmeans_with_pin_zero_keeps_pruned_weights_exactly_zero(n):
    torch.manual_seed(0)
    w = torch.randn(n // 100, 100) * 0.05 + 0.01
    spec = LayerSpec(bits=5, prune=0.6, cluster=True)
    result = compress_view(w, spec, huffman=True, other_bytes=0)
    assert (result.codebook == 0.0).sum() == 1
    pruned = ~result.keep
    assert torch.all(result.dequant_view[pruned] == 0.0)
    assert not torch.signbit(result.dequant_view[pruned]).any()  # +0.0, not -0.0
    assert torch.equal(result.codes[pruned], torch.full_like(result.codes[pruned], int(torch.nonzero(result.codebook == 0)[0, 0])))


@pytest.mark.parametrize("n", [5000, HIST_BINS * 4])
def test_kmeans_is_deterministic_sorted_and_centroids_are_cluster_means(n):
    torch.manual_seed(1)
    values = torch.distributions.Laplace(0.0, 1.0).sample((n,))
    c1, i1 = kmeans_1d(values, 32)
    c2, i2 = kmeans_1d(values.clone(), 32)
    assert torch.equal(c1, c2) and torch.equal(i1, i2)
    assert torch.all(c1[1:] >= c1[:-1])
    counts = torch.bincount(i1.long(), minlength=32)
    means = torch.bincount(i1.long(), weights=values.double(), minlength=32) / counts.clamp_min(1)
    used = counts > 0
    assert torch.allclose(c1[used].double(), means[used], rtol=1e-6, atol=1e-7)  # the exact update
    # before that update every value went to its nearest centroid: so almost all still do
    nearest = torch.bucketize(values, (c1[1:] + c1[:-1]) / 2)
    assert float((nearest == i1.long()).float().mean()) > 0.99


def exact_lloyd(values: torch.Tensor, k: int, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's iterations on every value (linear initialisation), the reference."""
    c = torch.linspace(float(values.min()), float(values.max()), k)
    for _ in range(iters):
        index = torch.bucketize(values, (c[1:] + c[:-1]) / 2)
        counts = torch.bincount(index, minlength=k).double()
        sums = torch.bincount(index, weights=values.double(), minlength=k)
        c = torch.where(counts > 0, sums / counts.clamp_min(1), c.double()).float()
    return c, torch.bucketize(values, (c[1:] + c[:-1]) / 2)


@pytest.mark.parametrize("dist", ["normal", "laplace"])
def test_kmeans_on_a_histogram_is_as_good_as_lloyd_on_the_values(dist):
    torch.manual_seed(2)
    n = HIST_BINS * 8
    values = torch.randn(n) if dist == "normal" else torch.distributions.Laplace(0.0, 1.0).sample((n,))
    err = lambda c, i: float(((c[i.long()] - values).double() ** 2).mean())  # noqa: E731
    ours = err(*kmeans_1d(values, 16))
    reference = err(*exact_lloyd(values, 16))
    assert ours <= 1.005 * reference


# -- what a compressed weight holds --------------------------------------------------
@pytest.mark.parametrize(
    "spec,codes_dtype",
    [
        (LayerSpec(bits=8), torch.int8),
        (LayerSpec(bits=4, symmetric=False, prune=0.5), torch.uint8),
        (LayerSpec(bits=5, cluster=True, prune=0.3), torch.uint8),
        (LayerSpec(bits=16), None),
        (LayerSpec(bits=None), None),
    ],
)
def test_codes_are_small_and_nbytes_counts_every_storage_once(spec, codes_dtype):
    torch.manual_seed(0)
    w = torch.randn(64, 300)
    r = compress_view(w, spec, huffman=True, other_bytes=0)
    n = w.numel()
    if codes_dtype is None:
        assert r.codes is None
    else:
        assert r.codes.dtype == codes_dtype and r.stream.symbols.dtype == torch.uint8
    expected = 0  # the float weights are the caller's; the dequantized ones are derived on use
    if r.keep is not None:
        expected += w.shape[0] * math.ceil(w.shape[1] / 8)  # the mask, a bit a weight, row by row
    if r.codes is not None:
        held = r.stream_spec.symbols
        shared = held is None or r.codes.untyped_storage().data_ptr() == held.untyped_storage().data_ptr()
        expected += n * (1 if shared else 2) + r.stream.zero_symbol.nbytes
        expected += r.codebook.numel() * 4 if r.codebook is not None else r.uniform.scale.numel() * 4 + r.uniform.zero_point.numel() * 8
    assert r.nbytes == expected
    assert r.nbytes <= (1.2 if r.keep is not None else 1) * n + 4096
    # the derived weights are what the result was measured on, and decode from what is stored
    assert r.sqnr_db == sqnr_db(r.float_view, r.dequant_view)
    if spec.bits is None and r.keep is None:
        assert r.dequant_view is r.float_view  # a float layer costs nothing
