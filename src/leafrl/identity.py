"""What a run, and each adapter it saves, was made from, recorded once and checked wherever it is
used again, so that a run belongs to one model and a LoRA is never put on a model it was not
trained on.

A model's identity is its name (hub name or path, as given) and three fingerprints: its config
(``config.json`` without the keys that loading sets, such as the dtype), its tokenizer (vocabulary
and special tokens) and its weights (a sample of every tensor: the first and last values of each,
rounded to bfloat16 so that loading in another dtype reads the same). A run adds its data: a
digest of each split's manifest (a saved dataset's metadata files).

    OUT/identity.json                          {"model": {...}, "data": {...}}, written at creation
    OUT/checkpoints/step-N/adapter/leafrl_base.json   {"model": {...}}: the base the LoRA was trained on

``--resume`` refuses a run whose model or data changed since (an edited config.yaml); every
command that takes ``--adapter`` refuses one whose base is another model. A moved model (another
path, the same fingerprints) is the same model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from leafrl.errors import UserError

RUN_FILE = "identity.json"
ADAPTER_FILE = "leafrl_base.json"
FINGERPRINTS = ("config", "tokenizer", "weights")
SAMPLE = 8  # values read from each end of every tensor
LOADING_KEYS = ("transformers_version", "dtype", "torch_dtype", "use_cache",  # set by loading or by the
                "pad_token_id", "bos_token_id", "eos_token_id")  # trainer (TRL aligns them with the tokenizer)


def _digest(payload: Any) -> str:
    data = payload if isinstance(payload, bytes) else json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def _model_keys(value: Any) -> Any:
    """A config dict without the keys that loading sets (private ones, versions, dtypes), at every level."""
    if isinstance(value, dict):
        return {k: _model_keys(v) for k, v in value.items() if not str(k).startswith("_") and k not in LOADING_KEYS}
    return value


def base_name(name: str) -> str | None:
    """A parameter's name in the base model, also under a peft LoRA (None for the LoRA's own)."""
    if "lora_" in name or "modules_to_save" in name:
        return None
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".").replace(".original_module.", ".")


@torch.no_grad()
def weights_fingerprint(model: Any) -> str:
    """A digest of the first and last ``SAMPLE`` values of every base parameter (bfloat16, by
    name): the same for the model alone and under an unmerged LoRA."""
    parts = []
    named = ((base_name(name), param) for name, param in model.named_parameters())
    for name, param in sorted((name, param) for name, param in named if name is not None):
        flat = param.detach().reshape(-1)
        ends = torch.cat([flat[:SAMPLE], flat[-SAMPLE:]]).to("cpu", torch.bfloat16).view(torch.int16)
        parts.append(name.encode() + ends.numpy().tobytes())
    return _digest(b"".join(parts))


def of_model(name: str, model: Any, tokenizer: Any) -> dict[str, str]:
    """The identity of ``model`` (as loaded from ``name``; a LoRA on it is left out) with ``tokenizer``."""
    return {"name": str(name), "type": model.config.model_type,
            "config": _digest(_model_keys(model.config.to_dict())),
            "tokenizer": _digest([sorted(tokenizer.get_vocab().items()), tokenizer.all_special_tokens]),
            "weights": weights_fingerprint(model)}


def of_data(data: str) -> dict[str, str]:
    """A digest of the splits a run reads (train, valid) of ``data``: their manifest files, or a
    saved dataset's metadata files."""
    from leafrl.data.sources import is_saved_dataset, locate, manifest_path

    root = Path(locate(data))
    if is_saved_dataset(root):
        files = sorted(root.rglob("*.json"))
        return {"saved dataset": _digest([[str(f.relative_to(root)), f.read_bytes().hex()] for f in files])}
    return {split: _digest(manifest_path(root, split).read_bytes()) for split in ("train", "valid")}


def differences(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """What differs between two model identities, as phrases ("config (model_type a -> b)")."""
    changed = [key for key in FINGERPRINTS if recorded.get(key) != current.get(key)]
    if "config" in changed and recorded.get("type") != current.get("type"):
        changed[changed.index("config")] = f"config (model_type {recorded.get('type')} -> {current.get('type')})"
    return changed


def save_run(out: Path, model: dict[str, str], data: dict[str, str]) -> None:
    """Record what the run in ``out`` is made from."""
    from leafrl._files import write_text_atomic

    write_text_atomic(Path(out) / RUN_FILE, json.dumps({"model": model, "data": data}, indent=2))


def check_resume(out: Path, model: dict[str, str], data: dict[str, str]) -> bool:
    """Refuse to resume the run in ``out`` on another model or data than it was made from (one
    line saying what changed). False when the run recorded nothing (made before leafrl kept
    identities): the caller records it now."""
    path = Path(out) / RUN_FILE
    if not path.is_file():
        from leafrl.tracking import warn

        warn(f"--resume {out}: the run records no {RUN_FILE} (made before leafrl kept one): its model and data "
             "cannot be checked, and are recorded as they are now")
        return False
    recorded = json.loads(path.read_text(encoding="utf-8"))
    was = recorded["model"]
    if changed := differences(was, model):
        raise UserError(f"--resume {out}: the run was made from model {was['name']}, and its config.yaml now names "
                        f"{model['name']}, whose {', '.join(changed)} differ: a run continues on the model it "
                        f"began with; set model in {Path(out) / 'config.yaml'} back, or start a new run")
    if changed := sorted(k for k in {*recorded["data"], *data} if recorded["data"].get(k) != data.get(k)):
        raise UserError(f"--resume {out}: the data changed since the run began ({', '.join(changed)} of "
                        f"{'its manifests' if 'saved dataset' not in changed else 'the saved dataset'}): a run "
                        "continues on the data it began with; restore it, or start a new run")
    return True


def save_adapter(adapter: Path, model: dict[str, str]) -> None:
    """Record beside a saved LoRA adapter the base model it was trained on."""
    (Path(adapter) / ADAPTER_FILE).write_text(json.dumps({"model": model}, indent=2))


def check_adapter(adapter: Path, given: str, model: dict[str, str]) -> str | None:
    """Refuse LoRA ``adapter`` (named ``given`` on the command line) on a model other than the
    one it was trained on (one line naming both and what differs). Returns a warning to show
    when the adapter records no base (not saved by leafrl), else None."""
    path = Path(adapter) / ADAPTER_FILE
    if not path.is_file():
        return (f"--adapter {given} records no base model (it was not saved by leafrl): leafrl cannot check that "
                f"it was trained on {model['name']}")
    was = json.loads(path.read_text(encoding="utf-8"))["model"]
    if changed := differences(was, model):
        raise UserError(f"--adapter {given} was trained on {was['name']} ({was['type']}), not on --model "
                        f"{model['name']} ({model['type']}): their {', '.join(changed)} differ; give the model it "
                        "was trained on")
    return None
