"""Train the bundled sample models, seeded, and write <name>.safetensors and <name>.json.

    python sample_models/train.py            # all samples
    python sample_models/train.py digits-cnn # one

Data: scikit-learn's handwritten digits with the fixed split of studio.samples.data.
Training uses random one-pixel shifts as augmentation. Runs on CPU in about a minute.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.samples.data import digits_split, write_digits_npz  # noqa: E402
from studio.samples.registry import SAMPLES, weights_path  # noqa: E402

SEED = 1234
RECIPES = {
    "digits-mlp": {"epochs": 100, "lr": 3e-3, "weight_decay": 1e-4},
    "digits-cnn": {"epochs": 40, "lr": 2e-3, "weight_decay": 1e-4},
    "digits-resnet": {"epochs": 40, "lr": 2e-3, "weight_decay": 1e-4},
    "digits-vit": {"epochs": 150, "lr": 2e-3, "weight_decay": 5e-2},
}


def shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by -1..1 pixels in each direction (zero padded)."""
    padded = F.pad(x, (1, 1, 1, 1))
    dx, dy = torch.randint(0, 3, (2, x.shape[0]), generator=gen)
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
    return out


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def train(name: str) -> dict:
    recipe = RECIPES[name]
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    (train_x, train_y), (eval_x, eval_y) = digits_split()
    model = SAMPLES[name].build()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    steps_per_epoch = (len(train_y) + 63) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=recipe["epochs"] * steps_per_epoch)
    start = time.time()
    for _ in range(recipe["epochs"]):
        model.train()
        order = torch.randperm(len(train_y), generator=gen)
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(model(shift(train_x[idx], gen)), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    record = {
        "name": name,
        "seed": SEED,
        **recipe,
        "train_accuracy": accuracy(model, train_x, train_y),
        "eval_accuracy": accuracy(model, eval_x, eval_y),
        "n_eval": len(eval_y),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(time.time() - start, 1),
        "torch": torch.__version__,
    }
    path = weights_path(name)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    write_digits_npz()
    for sample in sys.argv[1:] or list(RECIPES):
        print(json.dumps(train(sample)))
