"""Load a model file safely: TorchScript, safetensors, or ``torch.load(weights_only=True)``.

No file is ever unpickled with arbitrary code. A state dict (safetensors or a
weights-only ``.pt``) needs an architecture: a sample name, an ``nn.Module`` or a
callable that builds one; when none is given, the sample architectures are tried
and the one whose parameter names and shapes match exactly is used.
"""

from __future__ import annotations

import copy
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .engine.errors import StudioError
from .samples import SAMPLES, sample_spec

Arch = str | nn.Module | Callable[[], nn.Module] | None


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


def _state_dict_from(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, Mapping):
        if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
            obj = obj["state_dict"]
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return dict(obj)
    return None


def _build(arch: Arch) -> nn.Module:
    if isinstance(arch, str):
        return sample_spec(arch).build()
    if isinstance(arch, nn.Module):
        return copy.deepcopy(arch)
    if callable(arch):
        return arch()
    raise StudioError("arch must be a sample name, an nn.Module or a callable returning one")


def _matches(model: nn.Module, state: Mapping[str, torch.Tensor]) -> bool:
    own = model.state_dict()
    return own.keys() == state.keys() and all(own[k].shape == state[k].shape for k in own)


def model_from_state_dict(state: Mapping[str, torch.Tensor], arch: Arch = None) -> nn.Module:
    """Build ``arch`` (or the matching sample architecture) and load ``state`` into it."""
    if arch is None:
        for spec in SAMPLES.values():
            candidate = spec.build()
            if _matches(candidate, state):
                arch = spec.name
                break
        else:
            raise StudioError(
                "this file holds only weights (a state dict) that match none of the sample "
                f"architectures {list(SAMPLES)}; pass arch=<an nn.Module of the right architecture>, "
                "or save the model as TorchScript (torch.jit.script(model).save(path))"
            )
    model = _build(arch)
    result = model.load_state_dict(dict(state), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise StudioError(
            f"the weights do not fit the architecture: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return model.eval()


def load_model(path: str | Path, arch: Arch = None) -> nn.Module:
    """Load a model from ``path`` without running code from the file. Raises ValueError."""
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"no model file at {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise StudioError(f"{path.name} is not a readable safetensors file ({exc})") from exc
        return model_from_state_dict(state, arch)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            is_script = any(n.endswith("/code/") or "/code/" in n for n in archive.namelist())
        if is_script:
            try:
                return torch.jit.load(str(path), map_location="cpu").eval()
            except RuntimeError as exc:
                raise StudioError(f"{path.name} looks like TorchScript but does not load ({str(exc)[:200]})") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses pickled code with UnpicklingError and friends
        raise StudioError(
            f"{path.name} cannot be loaded safely: it is not TorchScript, safetensors, or a "
            f"weights-only torch file ({str(exc).splitlines()[0][:200]}). Save a state dict with "
            "safetensors, or the model with torch.jit.script(model).save(path)"
        ) from exc
    found = _state_dict_from(obj)
    if found is None:
        raise StudioError(f"{path.name} holds no state dict of tensors; save model.state_dict() instead")
    state = found
    return model_from_state_dict(state, arch)


_INPUT_KEYS = ("inputs", "x", "X", "data", "images")
_TARGET_KEYS = ("targets", "y", "labels", "target")


def _pick(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in mapping:
            return mapping[key]
    return None


def load_data(path: str | Path) -> tuple[Any, torch.Tensor | None]:
    """Load eval data: a ``.npz`` or a weights-only ``.pt`` holding inputs and targets.

    Accepted: a pair ``(inputs, targets)``, or a mapping with ``inputs``/``x`` and
    ``targets``/``y``/``labels`` (targets may be absent). Floating arrays become
    float32 tensors, integer arrays int64.
    """
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"no data file at {path}")
    if path.suffix == ".npz":
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as npz:
                obj: Any = {k: npz[k] for k in npz.files}
        except (ValueError, OSError) as exc:
            raise StudioError(f"{path.name} is not a readable .npz file ({exc})") from exc
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise StudioError(f"{path.name} cannot be loaded safely as tensors ({str(exc).splitlines()[0][:200]})") from exc
    if isinstance(obj, Mapping):
        inputs, targets = _pick(obj, _INPUT_KEYS), _pick(obj, _TARGET_KEYS)
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        inputs, targets = obj
    else:
        inputs, targets = obj, None
    if inputs is None:
        raise StudioError(f"{path.name} has no inputs: save a pair (inputs, targets) or a dict with keys 'inputs' and 'targets'")

    def as_tensor(value: Any) -> torch.Tensor:
        tensor = torch.as_tensor(value)
        return tensor.float() if tensor.is_floating_point() else tensor.long()

    inputs = {k: as_tensor(v) for k, v in inputs.items()} if isinstance(inputs, Mapping) else as_tensor(inputs)
    return inputs, None if targets is None else as_tensor(targets)


def load_compressed(path: str | Path, arch: Arch = None) -> nn.Module:
    """Load a ``.studio`` file as an ``nn.Module`` whose outputs equal the studio's simulated model.

    The architecture is rebuilt (a sample architecture is found by its layer names and
    shapes; otherwise pass ``arch=``), its BatchNorms folded as the studio did, the
    decoded weights loaded, and the activation quantizers installed.
    """
    from .engine.formats.studio import read
    from .engine.hooks import install_act_hooks
    from .engine.layers import replace_module

    path = Path(path)
    if not path.is_file():
        raise StudioError(f"no studio file at {path}")
    decoded = read(path.read_bytes())

    def folded(candidate: nn.Module) -> nn.Module:
        for layer_name, bn_name in decoded.folds:
            replace_module(candidate, bn_name, nn.Identity())
            layer = candidate.get_submodule(layer_name)
            if layer.bias is None:
                layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0]))
        return candidate

    if arch is None:
        for spec in SAMPLES.values():
            try:
                candidate = folded(spec.build())
            except (AttributeError, KeyError):  # this sample has no such module
                continue
            if _matches(candidate, decoded.state):
                model = candidate
                break
        else:
            raise StudioError("this studio file is not of a sample architecture; pass arch=<an nn.Module of the right architecture>")
    else:
        model = folded(_build(arch))
    try:
        model.load_state_dict(decoded.state, strict=True)
    except RuntimeError as exc:
        raise StudioError(f"the studio file does not fit the architecture ({str(exc)[:300]})") from exc
    for name, pair in decoded.acts.items():
        install_act_hooks(model.get_submodule(name), _constant(pair))
    return model.eval()
