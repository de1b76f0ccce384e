import numpy as np
import torch
from torch import nn

from studio.engine import LayerSpec, Plan, Session
from studio.engine.encode import StreamSpec, _relative
from studio.engine.huffman import code_lengths, huffman_bytes
from studio.engine.relindex import gap_stats, relative_entries


def _linear(weight: list[list[float]], bias: list[float]) -> nn.Module:
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return nn.Sequential(layer)


def test_small_layer_counted_by_hand_dense():
    model = _linear([[0.1, -0.2, 0.3, 0.4], [1.0, 0.5, -0.5, 0.0]], [0.0, 1.0])
    session = Session(model, (torch.randn(4, 4), None))
    layer = session.size(Plan.uniform(4, huffman=False)).layers["0"]
    # 8 weights x 4 bits = 4 bytes; 2 fp32 scales = 8 bytes; 2 fp32 biases = 8 bytes
    assert (layer.codes, layer.scales, layer.index, layer.other, layer.total) == (4, 8, 0, 8, 20)
    asym = session.size(Plan.uniform(4, symmetric=False, huffman=False)).layers["0"]
    assert asym.scales == 2 * 4 + 2 * 1  # plus one int8 zero-point per channel


def test_small_pruned_layer_counted_by_hand():
    # 16 weights; the 8 large ones sit at even positions, so every gap is exactly 1
    row = [1.0, 0.01, -1.0, 0.02, 1.0, -0.01, 1.0, 0.03]
    model = _linear([row, row], [0.5, 0.5])
    session = Session(model, (torch.randn(3, 8), None))
    layer = session.size(Plan.uniform(4, prune=0.5, huffman=False)).layers["0"]
    # dense would be 16 x 4 bits = 8 bytes; a bitmask 2 bytes + 8 x 4 bits = 6 bytes;
    # a 1-bit relative index: 8 gaps x 1 bit = 1 byte + 8 codes x 4 bits = 4 bytes -> 5 bytes
    assert layer.size.index_encoding == "relative-1bit"
    assert (layer.codes, layer.scales, layer.index, layer.other) == (4, 8, 1, 8)
    assert layer.total == 21
    assert layer.sparsity == 0.5


def test_relative_index_inserts_filler_zeros_when_a_gap_overflows():
    keep = np.zeros(12, dtype=bool)
    keep[[0, 10]] = True
    symbols = np.full(12, 3, dtype=np.uint8)
    stream = StreamSpec((1, 12), width=4, alphabet=16, symbols=torch.from_numpy(symbols.reshape(1, 12)), zero_symbol=np.array([0]))
    cand = _relative(stream, gap_stats(keep, 12), None, huffman=False, r=2)
    # gap 9 with 2-bit gaps (max 3): fillers at 4 and 8, then a gap of 1 -> 4 entries
    assert cand.index == 1  # 4 gaps x 2 bits
    assert cand.codes == 2  # 4 codes x 4 bits
    (entries, gaps), = relative_entries(keep, 2)
    assert entries.tolist() == [0, 4, 8, 10] and gaps.tolist() == [0, 3, 3, 1]


def test_huffman_code_lengths_and_table_are_counted():
    counts = np.array([5, 1, 1, 1])
    assert sorted(code_lengths(counts).tolist()) == [1, 2, 3, 3]
    # payload 5*1 + 2 + 3 + 3 = 13 bits -> 2 bytes, plus a 4-byte table
    assert huffman_bytes(counts) == 6
    assert code_lengths(np.array([0, 7, 0])).tolist() == [0, 1, 0]


def test_huffman_is_used_only_when_it_saves_bytes(mlp_session):
    plan = Plan.uniform(8)
    with_h = mlp_session.size(plan)
    without = mlp_session.size(plan.replace(huffman=False))
    assert with_h.size_bytes <= without.size_bytes
    for name, layer in without.layers.items():
        assert layer.size.codes_encoding == "packed"
        assert layer.codes == -(-mlp_session.layer(name).weight_shape[0] * mlp_session.layer(name).weight_shape[1] * 8 // 8)


def test_parts_add_up_for_every_spec(cnn_session):
    for spec in [
        LayerSpec(bits=None),
        LayerSpec(bits=16, prune=0.3),
        LayerSpec(bits=4, prune=0.5),
        LayerSpec(bits=3, prune=0.5, prune_method="structured"),
        LayerSpec(bits=2, prune=0.5, prune_method="2:4", cluster=True),
        LayerSpec(bits=6, granularity="tensor", symmetric=False, clip="mse"),
    ]:
        report = cnn_session.size(Plan(default=spec))
        assert report.size_bytes == sum(layer.codes + layer.scales + layer.index + layer.other for layer in report.layers.values()) + report.rest_bytes + report.container_bytes
        assert sum(report.parts().values()) == report.size_bytes


def test_float_plan_size_equals_folded_float_model(cnn_session):
    report = cnn_session.size(Plan())
    # folding removes each BatchNorm's 4 vectors and counter but adds a bias to its conv
    assert report.size_bytes < report.float_size_bytes
    assert report.rest_bytes == 0
