"""The bundled sample models: ``list_samples()`` and ``load_sample(name)``.

Weights live in ``sample_models/<name>.safetensors`` beside a ``<name>.json`` with
the training record (seed, epochs, measured float accuracy).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..engine.errors import StudioError
from .architectures import DigitsCNN, DigitsMLP, DigitsResNet, DigitsViT
from .data import digits_split

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "sample_models"


@dataclass(frozen=True)
class SampleSpec:
    name: str
    build: Callable[..., nn.Module]  # build(width=1.0): the architecture, width-scaled
    description: str
    he_init: bool = True  # students start from He initialisation (False: PyTorch's defaults)


SAMPLES: dict[str, SampleSpec] = {}


def register_sample(name: str, build: Callable[..., nn.Module], description: str, he_init: bool = True) -> None:
    SAMPLES[name] = SampleSpec(name, build, description, he_init)


register_sample("digits-mlp", DigitsMLP, "LeNet-300-100 MLP (3 Linear layers)")
register_sample("digits-cnn", DigitsCNN, "CNN: 3 Conv2d + BatchNorm, 1 Linear")
register_sample("digits-resnet", DigitsResNet, "Small ResNet: residual blocks, 1x1 shortcuts, BatchNorm")
register_sample(
    "digits-vit", DigitsViT, "Vision transformer: patch embedding, attention, LayerNorm, position Embedding", he_init=False
)


@dataclass
class Sample:
    """A trained sample model with its data. ``model`` is in eval mode."""

    name: str
    description: str
    model: nn.Module
    eval_data: tuple[torch.Tensor, torch.Tensor]
    train_data: tuple[torch.Tensor, torch.Tensor]
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def float_accuracy(self) -> float | None:
        return self.record.get("eval_accuracy")


def list_samples() -> list[str]:
    """Names of the bundled sample models."""
    return list(SAMPLES)


def sample_spec(name: str) -> SampleSpec:
    if name not in SAMPLES:
        raise StudioError(f"unknown sample {name!r}; available samples: {list_samples()}")
    return SAMPLES[name]


def weights_path(name: str) -> Path:
    return SAMPLES_DIR / f"{name}.safetensors"


def load_sample(name: str) -> Sample:
    """Load a bundled, trained sample model and its fixed train/eval split."""
    spec = sample_spec(name)
    path = weights_path(name)
    if not path.exists():
        raise StudioError(f"the weights of sample {name!r} are missing ({path}); run `python sample_models/train.py {name}`")
    model = spec.build()
    model.load_state_dict(load_file(str(path)))
    model.eval()
    record_path = path.with_suffix(".json")
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    train, evaluation = digits_split()
    return Sample(name, spec.description, model, evaluation, train, record)


def student(name: str, width: float = 0.5, seed: int = 0) -> nn.Module:
    """A new, untrained model of sample ``name``'s architecture with hidden sizes scaled by
    ``width``, initialised from ``seed`` (the global random state is left as it was), in eval
    mode. Distil the sample into it with ``finetune(Session(student, ...), plan, train_data,
    method="distill", teacher=load_sample(name).model)``.

    The studio trains with BatchNorm folded away (as it deploys), so convolutional and MLP
    students start from He initialisation (normal, fan-in, for ReLU; zero biases), which keeps
    activations at scale without BatchNorm's normalisation; the transformer, which has
    LayerNorm, keeps PyTorch's default initialisation."""
    spec = sample_spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.build(width=width)
        if spec.he_init:
            for module in model.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
    return model.eval()
