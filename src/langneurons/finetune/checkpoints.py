"""A fine-tuning run's folder: its file names, metadata, checkpoints and resume state (tensors in
safetensors, everything else JSON, never Python objects), and loading a finished run's adapter
onto its base model (:func:`load_finetuned`). The training loop is :mod:`.train`."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from langneurons import __version__
from langneurons.artefacts import atomic_save_safetensors, stable_hash, staging_dir, write_json
from langneurons.errors import LangNeuronsError, warn
from langneurons.finetune.neuron_lora import (
    ADAPTER_NAME,
    LoraModel,
    ParameterCounts,
    adapter_state_dict,
)
from langneurons.finetune.options import FinetuneConfig
from langneurons.finetune.parallel import DataParallel
from langneurons.finetune.rows import ROWS_FILE, RowsModel, apply_saved_rows
from langneurons.identify.neuron_set import NeuronSet
from langneurons.models.architectures import adapter_for
from langneurons.models.loading import DEFAULT_MODEL, DEFAULT_MODEL_ID, LoadedModel, ModelInfo, load_model
from langneurons.tasks.prompts import (
    EncodedData,
)

METADATA = "langneurons_finetune.json"
TRAINING_STATE = "training_state.safetensors"
"""Tensors of the resume state: trainable parameters, optimizer state tensors, RNG states (uint8)."""
TRAINING_STATE_JSON = "training_state.json"
"""Everything else of the resume state: step, losses, scheduler, optimizer hyper-parameters."""
LEGACY_TRAINING_STATE = "training_state.pt"  # torch.save of older versions; never loaded
STATE_FORMAT = "langneurons.training-state/1"
NEURONS_FILE = "training_neurons.json"
FORMAT = "langneurons.finetune/1"


def rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_adapter_dir(
    target: Path, lora: LoraModel, metadata: dict, extra: Callable[[Path], None] | None = None
) -> None:
    """Write adapter + metadata (+ extra files) into a staging dir and rename it to ``target``."""
    staging = staging_dir(target.parent, prefix=f".{target.name}-")
    try:
        if isinstance(lora, RowsModel):
            lora.save(staging)
        else:
            lora.model.save_pretrained(str(staging), state_dict=adapter_state_dict(lora.model))
        if extra is not None:
            extra(staging)
        write_json(staging / METADATA, metadata)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def checkpoint_folders(output_dir: Path) -> list[Path]:
    folder = output_dir / "checkpoints"
    found = [p for p in folder.glob("step-*") if (p / METADATA).is_file() and (p / TRAINING_STATE).is_file()
             and p.name.removeprefix("step-").isdigit()]
    legacy = [p for p in folder.glob("step-*") if (p / LEGACY_TRAINING_STATE).is_file() and p not in found]
    if legacy:
        warn(f"ignoring {len(legacy)} checkpoint(s) in {folder} with {LEGACY_TRAINING_STATE} (older format, never "
             "loaded: loading it could run code); training resumes from a newer checkpoint or starts over")
    return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))


def read_metadata(folder: Path) -> dict:
    path = folder / METADATA
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise LangNeuronsError(f"cannot read fine-tuning metadata {path}: {error}") from error
    if metadata.get("format") != FORMAT:
        raise LangNeuronsError(f"{path} is not langneurons fine-tuning metadata")
    return metadata


def run_versions() -> dict:
    import peft
    import transformers

    return {"langneurons": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}


def run_metadata(run_hash: str, info: ModelInfo, config: FinetuneConfig, neuron_mask: torch.Tensor | None,
                  chosen_set: NeuronSet | None, data: EncodedData, data_hash: str, neuron_hash: str, lora: LoraModel,
                  counts: ParameterCounts, total_steps: int) -> dict:
    return {
        "format": FORMAT,
        "run_hash": run_hash,
        "base": info.to_dict(),
        "task": config.task,
        "neurons": {
            "mode": config.neurons, "languages": list(config.languages), "neuron_set_path": config.neuron_set_path,
            "hash": neuron_hash, "count": int(neuron_mask.sum()) if neuron_mask is not None else 0,
            "per_layer": neuron_mask.sum(1).tolist() if neuron_mask is not None else [],
            "method": chosen_set.method if chosen_set else None,
            "source": chosen_set.source if chosen_set else None,
        },
        "data": {"hash": data_hash, "examples": len(data.examples), "skipped": data.skipped,
                 "truncated": data.truncated},
        "config": asdict(config),
        "lora": {"target_modules": lora.target_modules, "masked_modules": sum(m.mask is not None for m in lora.plan)},
        "parameters": asdict(counts),
        "total_steps": total_steps,
        "versions": run_versions(),
    }


def save_checkpoint(output_dir: Path, step: int, lora: LoraModel, metadata: dict, optimizer, scheduler,
                     losses: list[float], rng: dict | list[dict], keep: int,
                     write_neurons: Callable[[Path], None]) -> None:
    """rng: this process's RNG state, or (data-parallel) one per process in rank order."""
    parameters = {n: p for n, p in lora.model.named_parameters() if p.requires_grad}

    def extra(folder: Path) -> None:
        write_training_state(folder, step, parameters, optimizer.state_dict(), scheduler.state_dict(), rng, losses)
        write_neurons(folder)

    save_adapter_dir(output_dir / "checkpoints" / f"step-{step:07d}", lora, metadata, extra)
    for old in checkpoint_folders(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def write_training_state(folder: Path, step: int, parameters: dict[str, torch.Tensor], optimizer_state: dict,
                         scheduler_state: dict, rng: dict | list[dict], losses: list[float]) -> None:
    """Resume state as tensors and JSON only: tensors in ``training_state.safetensors`` (``parameters.<name>``,
    ``optimizer.<param index>.<key>``, ``rng.<process>.cpu`` / ``rng.<process>.cuda.<device>`` as
    uint8), the rest as JSON in ``training_state.json``."""
    tensors = {f"parameters.{name}": value.detach().cpu().clone().contiguous() for name, value in parameters.items()}
    moments: dict[str, dict] = {}
    for index, entry in optimizer_state["state"].items():
        moments[str(index)] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().clone().contiguous()
            else:
                moments[str(index)][key] = value
    per_process = isinstance(rng, list)
    states = rng if per_process else [rng]
    cuda_devices = []
    for process, state in enumerate(states):
        tensors[f"rng.{process}.cpu"] = state["cpu"].contiguous()
        cuda = state.get("cuda") or []
        cuda_devices.append(len(cuda))
        for device, value in enumerate(cuda):
            tensors[f"rng.{process}.cuda.{device}"] = value.contiguous()
    scalars = {
        "format": STATE_FORMAT, "step": step, "losses": list(losses), "scheduler": scheduler_state,
        "optimizer": {"param_groups": optimizer_state["param_groups"], "scalars": moments,
                      "tensor_state": {str(i): sorted(k for k, v in e.items() if isinstance(v, torch.Tensor))
                                       for i, e in optimizer_state["state"].items()}},
        "parameters": sorted(parameters), "rng": {"per_process": per_process, "cuda_devices": cuda_devices},
    }
    try:
        text = json.dumps(scalars, indent=1, sort_keys=True, allow_nan=True)
    except TypeError as error:  # a value JSON cannot hold: refuse rather than store Python objects
        raise LangNeuronsError(f"training state cannot be written as JSON: {error}") from error
    atomic_save_safetensors(tensors, folder / TRAINING_STATE, {"format": STATE_FORMAT})
    from langneurons.artefacts import write_text

    write_text(folder / TRAINING_STATE_JSON, text + "\n")


def read_training_state(folder: Path) -> dict:
    """The resume state written by :func:`write_training_state`: ``step``, ``losses``,
    ``parameters`` (name -> tensor), ``optimizer`` and ``scheduler`` (state dicts), ``rng`` (one
    state dict, or a list of them for a data-parallel run). A damaged or foreign checkpoint is a
    LangNeuronsError naming the folder and how to start over."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    def broken(reason: str) -> LangNeuronsError:
        return LangNeuronsError(f"checkpoint {folder} is unreadable ({reason}); delete {folder.parent} to start "
                                "training over")

    try:
        scalars = json.loads((folder / TRAINING_STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / TRAINING_STATE))
    except (OSError, ValueError, SafetensorError) as error:
        raise broken((str(error).splitlines() or [type(error).__name__])[0][:160]) from None
    try:
        if scalars.get("format") != STATE_FORMAT:
            raise ValueError(f"format {str(scalars.get('format'))[:40]!r}")
        optimizer = scalars["optimizer"]
        state = {}
        for index, keys in optimizer["tensor_state"].items():
            entry = dict(optimizer["scalars"].get(index, {}))
            entry.update({key: tensors[f"optimizer.{index}.{key}"] for key in keys})
            state[int(index)] = entry
        processes = [{"cpu": tensors[f"rng.{p}.cpu"],
                      **({"cuda": [tensors[f"rng.{p}.cuda.{d}"] for d in range(count)]} if count else {})}
                     for p, count in enumerate(scalars["rng"]["cuda_devices"])]
        if any(s["cpu"].dtype != torch.uint8 for s in processes):
            raise ValueError("RNG states must be uint8")
        return {
            "step": int(scalars["step"]), "losses": [float(x) for x in scalars["losses"]],
            "parameters": {name: tensors[f"parameters.{name}"] for name in scalars["parameters"]},
            "optimizer": {"state": state, "param_groups": optimizer["param_groups"]},
            "scheduler": dict(scalars["scheduler"]),
            "rng": processes if scalars["rng"]["per_process"] else processes[0],
        }
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise broken(f"missing or malformed {str(error)[:120]}") from None


def resume_from(checkpoint: Path, model: nn.Module, optimizer, scheduler,
            parallel: DataParallel | None = None) -> tuple[int, list[float]]:
    """Restore trainable parameters, optimizer, scheduler and RNG; returns (step, losses so far).

    A checkpoint of a data-parallel run holds one RNG state per process: each process restores
    its own; with another number of processes, RNG states are restored where ranks match (only
    the dropout masks depend on them)."""
    state = read_training_state(checkpoint)
    parameters = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(parameters) != set(state["parameters"]) or any(
            parameters[n].shape != v.shape for n, v in state["parameters"].items()):
        raise LangNeuronsError(f"checkpoint {checkpoint} does not match the model's trainable parameters; "
                               f"delete {checkpoint.parent} to start training over")
    try:
        with torch.no_grad():
            for name, value in state["parameters"].items():
                parameters[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        if isinstance(rng, list):
            rank = parallel.rank if parallel is not None else 0
            rng = rng[rank] if rank < len(rng) else None
        if rng is not None:
            set_rng_state(rng)
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        raise LangNeuronsError(f"checkpoint {checkpoint} does not fit this run ({str(error)[:160]}); delete "
                               f"{checkpoint.parent} to start training over") from None
    return state["step"], state["losses"]


def finetuned_loaded(base: LoadedModel, model: nn.Module, adapter_state: dict, path: Path) -> LoadedModel:
    """LoadedModel of base + adapter: its own model id and weights fingerprint (base + adapter
    tensors), so artefacts of the fine-tuned model are never mistaken for the base model's."""
    tensors = [adapter_state[k].float() for k in sorted(adapter_state)]
    fingerprint = stable_hash(base.info.weights_fingerprint, *tensors)
    kind = "rows" if (path / ROWS_FILE).is_file() else "lora"
    info = replace(base.info, model_id=f"{base.info.model_id}+{kind}:{path.name}", weights_fingerprint=fingerprint)
    return LoadedModel(model=model, tokenizer=base.tokenizer, info=info, adapter=adapter_for(model))


def saved_adapter(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if (path / ROWS_FILE).is_file():
        return load_file(str(path / ROWS_FILE))
    return load_file(str(path / "adapter_model.safetensors"))


def read_finetune_metadata(path: str | os.PathLike) -> dict:
    """The ``langneurons_finetune.json`` of a finished run (LangNeuronsError if absent/foreign)."""
    path = Path(path)
    if not (path / METADATA).is_file():
        raise LangNeuronsError(f"{path} is not a finished langneurons fine-tuning run (no {METADATA})")
    return read_metadata(path)


def load_finetuned(path: str | os.PathLike, base: LoadedModel | None = None, merge: bool = False) -> LoadedModel:
    """Load a fine-tuned adapter onto its base model.

    ``base`` None loads the base model named in the metadata; a given ``base`` must have the
    weights fingerprint recorded at training time, and is wrapped in place. Every adapter weight
    the config expects must be in the file and no other (never a silent partial load). The masked
    factors were saved masked, so no masks are needed at inference. ``merge`` folds the adapter
    into the base weights (a plain transformers model, same outputs up to rounding).
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    path = Path(path)
    metadata = read_finetune_metadata(path)
    recorded = metadata["base"]
    if base is None:
        model_id = DEFAULT_MODEL if recorded["model_id"] == DEFAULT_MODEL_ID else recorded["model_id"]
        base = load_model(model_id, revision=recorded.get("revision") or None)
    if base.info.weights_fingerprint != recorded["weights_fingerprint"]:
        raise LangNeuronsError(
            f"adapter {path} was trained on {recorded['model_id']} (weights {recorded['weights_fingerprint']}), "
            f"not on {base.info.model_id} (weights {base.info.weights_fingerprint})"
        )
    if metadata["config"].get("adapter", "lora") == "rows":  # the deltas are added to the weights (merged)
        state = apply_saved_rows(base.model, path)
        base.model.eval()
        return finetuned_loaded(base, base.model, state, path)
    weights_file = path / "adapter_model.safetensors"
    if not weights_file.is_file() or not (path / "adapter_config.json").is_file():
        raise LangNeuronsError(f"{path} lacks adapter_config.json or adapter_model.safetensors")
    config = LoraConfig.from_pretrained(str(path))
    state = saved_adapter(path)
    model = get_peft_model(base.model, config, adapter_name=ADAPTER_NAME)
    result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER_NAME)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        problem = f"missing {missing[:3]}" if missing else f"unexpected {list(result.unexpected_keys)[:3]}"
        raise LangNeuronsError(f"adapter {path} does not match its config: {problem} weights")
    model.eval()
    if merge:
        model = model.merge_and_unload()
    return finetuned_loaded(base, model, state, path)
