"""The training forward compresses exactly as the engine does; gradients go straight through."""

import pytest
import torch
from torch import nn

from studio.engine.activations import fake_quant, qparams_for_range
from studio.engine.compress import compress_view
from studio.engine.plan import LayerSpec
from studio.engine.prune import prune_mask
from studio.engine.qat import WeightFakeQuant, act_fake_quant, install_ste_act_hooks
from studio.engine.quantize import channel_view

pytestmark = pytest.mark.usefixtures("one_thread")  # many small passes: one intra-op thread is faster


SPECS = [
    LayerSpec(bits=b, granularity=g, symmetric=s, clip=c)
    for b in (2, 3, 4, 8)
    for g in ("channel", "tensor")
    for s in (True, False)
    for c in ("minmax", "mse")
] + [
    LayerSpec(bits=4, prune=0.5),
    LayerSpec(bits=3, symmetric=False, prune=0.7, granularity="tensor"),
    LayerSpec(bits=4, prune=0.5, prune_method="structured"),
    LayerSpec(bits=8, prune=0.5, prune_method="2:4"),
    LayerSpec(bits=16),
    LayerSpec(bits=16, prune=0.3),
    LayerSpec(bits=None, prune=0.6),
    LayerSpec(bits=3, cluster=True),
    LayerSpec(bits=5, cluster=True, prune=0.8),
    LayerSpec(bits=2, cluster=True, prune=0.5, prune_method="structured"),
]


def _weights(samples):
    mlp = samples["digits-mlp"].model
    cnn = samples["digits-cnn"].model
    torch.manual_seed(0)
    deconv = nn.ConvTranspose2d(6, 4, 3)  # channel axis 1
    return [(mlp.fc3.weight, 0), (cnn.features[3].weight, 0), (deconv.weight, 1)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label())
def test_weight_forward_equals_the_engine_bit_for_bit(samples, spec):
    for weight, axis in _weights(samples):
        weight = weight.detach().clone()
        view = channel_view(weight, axis, True)
        engine = compress_view(view, spec, False, 0)  # the weights do not depend on the size coding
        q = WeightFakeQuant(spec, axis)
        q.set_keep(prune_mask(view, spec.prune, spec.prune_method), weight)
        q.recluster(weight)
        ours = channel_view(q(weight.requires_grad_()), axis, True)
        assert torch.equal(ours, engine.dequant_view), spec.label()
        if engine.keep is not None:
            assert torch.equal(q.keep, engine.keep)
            assert torch.all(weight.detach()[~_from_view(engine.keep, weight, axis)] == 0)


def _from_view(keep, like, axis):
    from studio.engine.quantize import from_channel_view

    return from_channel_view(keep, like, axis, True)


def test_straight_through_gradient_zero_at_pruned_and_clipped_weights():
    torch.manual_seed(0)
    weight = torch.randn(8, 50)
    weight[:, 0] = 8.0  # an outlier per row: the MSE scale clips it
    spec = LayerSpec(bits=3, clip="mse", prune=0.5)
    q = WeightFakeQuant(spec, 0)
    keep = prune_mask(weight, spec.prune, spec.prune_method)
    q.set_keep(keep, weight)
    latent = weight.clone().requires_grad_()
    upstream = torch.randn(8, 50)
    (q(latent) * upstream).sum().backward()
    assert torch.all(latent.grad[~keep] == 0)
    assert torch.all(latent.grad[:, 0] == 0)  # clipped: outside the grid's range
    inside = keep.clone()
    inside[:, 0] = False
    assert torch.equal(latent.grad[inside], upstream[inside])  # identity elsewhere


def test_minmax_grid_passes_every_kept_gradient():
    torch.manual_seed(1)
    latent = torch.randn(4, 30, requires_grad=True)
    q = WeightFakeQuant(LayerSpec(bits=2), 0)
    upstream = torch.randn(4, 30)
    (q(latent) * upstream).sum().backward()
    assert torch.equal(latent.grad, upstream)


def test_kmeans_shared_values_follow_their_members_and_zero_stays_pinned():
    torch.manual_seed(2)
    weight = torch.randn(10, 40)
    spec = LayerSpec(bits=3, cluster=True, prune=0.5)
    q = WeightFakeQuant(spec, 0)
    q.set_keep(prune_mask(weight, 0.5, "unstructured"), weight)
    q.recluster(weight)
    before = q(weight)
    moved = weight + 0.01 * q.keep  # every kept weight moves by +0.01
    after = q(moved)
    kept_nonzero = q.keep & (before != 0)
    assert torch.allclose(after[kept_nonzero], before[kept_nonzero] + 0.01, atol=1e-6)
    assert torch.all(after[before == 0] == 0)  # the pinned zero and the pruned weights
    assert len(torch.unique(after)) <= 2**spec.bits  # still 2**bits shared values


@pytest.mark.parametrize("bits", [8, 16])
def test_activation_forward_equals_the_engine_and_gradient_is_clipped(bits):
    torch.manual_seed(3)
    x = torch.randn(64, 32) * 3
    q = qparams_for_range(-2.0, 4.0, bits)
    x[0, :4] = torch.tensor([0.5, 1.5, 2.5, -0.5]) * q.scale + 0.0  # ties: round half to even
    xg = x.clone().requires_grad_()
    y = act_fake_quant(xg, q)
    assert torch.equal(y, fake_quant(x, q))
    y.sum().backward()
    raw = torch.round(x / q.scale) + q.zero_point
    inside = (raw >= q.qmin) & (raw <= q.qmax)
    assert not bool(inside.all())
    assert torch.equal(xg.grad, inside.float())


def test_activation_hooks_quantize_input_and_output_and_can_be_removed():
    torch.manual_seed(4)
    layer = nn.Linear(5, 3)
    x = torch.randn(7, 5)
    q_in, q_out = qparams_for_range(-1.0, 1.0, 8), qparams_for_range(-2.0, 2.0, 8)
    handles = install_ste_act_hooks(layer, lambda: (q_in, q_out))
    expected = fake_quant(nn.functional.linear(fake_quant(x, q_in), layer.weight, layer.bias), q_out)
    assert torch.equal(layer(x), expected)
    for handle in handles:
        handle.remove()
    assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
