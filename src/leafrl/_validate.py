"""Input checks for the pure core: each raises ``ValueError`` naming the offending argument.

Pure: imports only torch. Checks that need a value from the tensor (finiteness, prefix masks)
cost one host sync each; shape and dtype checks cost nothing.
"""

from __future__ import annotations

import torch

_KINDS = {
    "int": lambda dt: not dt.is_floating_point and not dt.is_complex and dt != torch.bool,
    "float": lambda dt: dt.is_floating_point,
    "bool": lambda dt: dt == torch.bool,
}


def check_tensor(name: str, x: object, kind: str, shape: tuple[int, ...] | None = None,
                 ndim: int | None = None) -> torch.Tensor:
    """Check that ``x`` is a tensor of dtype ``kind`` ("int" | "float" | "bool") and shape/ndim."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not _KINDS[kind](x.dtype):
        raise ValueError(f"{name}: expected a {kind} tensor, got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dims, got shape {list(x.shape)}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {list(shape)}, got {list(x.shape)}")
    return x


def check_same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")


def check_finite(name: str, x: torch.Tensor, where: torch.Tensor | None = None,
                 what: str = "") -> None:
    """Raise naming the first index of ``x`` that is NaN/inf (only where ``where`` is True)."""
    # fast path: one float64 sum is finite iff every value is (or overflows: then look closer)
    total = (x if where is None else torch.where(where, x, 0)).sum(dtype=torch.float64)
    if not bool(total.isfinite()):
        bad = ~torch.isfinite(x) if where is None else ~torch.isfinite(x) & where
        if not bool(bad.any()):
            return
        idx = tuple(int(i) for i in bad.nonzero()[0])
        pos = ", ".join(map(str, idx))
        raise ValueError(f"{name}[{pos}] is {x[idx].item()}{what}: values must be finite")


def check_prefix_mask(name: str, mask: torch.Tensor) -> None:
    """Raise unless every row of ``mask`` [N, T] is True on a prefix and False after it."""
    grows = mask[:, 1:] > mask[:, :-1]  # [N, T-1] a True right after a False
    if bool(grows.any()):
        row, col = (int(i) for i in grows.nonzero()[0])
        raise ValueError(
            f"{name}: row {row} is not a prefix mask (True at position {col + 1} after a False): "
            "real tokens must come first, padding last (right padding)"
        )


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
