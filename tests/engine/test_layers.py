"""Every required layer kind: Linear, Conv1d, Conv2d, Conv3d, ConvTranspose2d and Embedding."""

import pytest
import torch
from torch import nn

import studio
from studio.engine import Plan, Session


class AllKinds(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.conv1d = nn.Conv1d(8, 6, 3, padding=1)
        self.bn1d = nn.BatchNorm1d(6)
        self.up = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.conv2d = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3d = nn.Conv3d(1, 2, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 4 + 2 * 4 * 4 * 4, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.bn1d(self.conv1d(self.embed(ids).transpose(1, 2)))  # (N, 6, 4)
        img = self.conv2d(self.up(h.reshape(-1, 6, 2, 2)))  # (N, 4, 4, 4)
        vol = self.conv3d(img[:, :1].unsqueeze(1).expand(-1, 1, 4, 4, 4).contiguous())  # (N, 2, 4, 4, 4)
        return self.head(torch.cat([img.flatten(1), vol.flatten(1)], dim=1))


def test_all_layer_kinds_compress_export_and_reload(tmp_path):
    torch.manual_seed(0)
    model = AllKinds()
    with torch.no_grad():  # give the BatchNorm real statistics to fold
        model.bn1d.running_mean.uniform_(-0.5, 0.5)
        model.bn1d.running_var.uniform_(0.5, 2.0)
    model.eval()
    ids = torch.randint(0, 10, (64, 4))
    session = Session(model, (ids, None))
    kinds = {layer.name: layer.kind for layer in session.layers}
    assert kinds == {"embed": "Embedding", "conv1d": "Conv1d", "up": "ConvTranspose2d", "conv2d": "Conv2d", "conv3d": "Conv3d", "head": "Linear"}
    assert session.layer("up").channel_axis == 1 and session.layer("up").channels == 4
    assert session.folds == [("conv1d", "bn1d")]
    plan = Plan.uniform(4, prune=0.3).with_layer("up", bits=3, symmetric=False).with_layer("embed", bits=6, act_bits=8)
    report = session.evaluate(plan)
    assert 0.0 <= report.metric <= 1.0 and report.fidelity.cosine > 0.5
    path = session.export(plan, tmp_path / "m.studio", format="studio")
    assert path.stat().st_size == report.size_bytes
    loaded = studio.load_compressed(path, arch=AllKinds())
    with torch.no_grad():
        assert torch.equal(loaded(ids), session.compressed_model(plan)(ids))
    check = session.verify(session.export(plan, tmp_path / "m.onnx", format="onnx"))
    assert check.metric == check.studio_metric  # ONNX Runtime agrees on every kind
    support = session.runtime_support(plan)
    assert support["up"].weights == "uint4 QDQ" and not support["up"].native


def test_gpt2_conv1d_is_a_compressible_kind():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 64, (6, 10))
    session = Session(model, (ids, None))
    kinds = {info.name: info.kind for info in session.layers}
    assert kinds["transformer.h.0.attn.c_attn"] == "Conv1D"
    assert session.layer("transformer.h.0.attn.c_attn").channel_axis == 1  # weight is (in, out)
    conv1d_params = sum(p.numel() for n, p in model.named_parameters() if ".c_" in n and n.endswith("weight"))
    covered = sum(info.weight_shape[0] * info.weight_shape[1] for info in session.layers if info.kind == "Conv1D")
    assert covered == conv1d_params  # every Conv1D weight is compressible now
    report = session.evaluate(Plan.uniform(8))
    assert report.fidelity.agreement > 0.9
    assert report.layers["transformer.h.0.mlp.c_fc"].scales == 4 * 128  # one fp32 scale per output channel (n_inner = 4 * 32)
    out = session.compressed_model(Plan.uniform(8))(ids).logits
    assert torch.equal(out, session.outputs(Plan.uniform(8))[0])
