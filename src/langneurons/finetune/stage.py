"""The ``finetune`` stages (section ``finetune:``, one per run): LoRA / neuron-LoRA adapters and
learning curves; the run config, cached run, report section and published files."""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass, field
from pathlib import Path

from langneurons.blocks import Block, fmt_number, read_json, stage_folders
from langneurons.finetune.train import FinetuneConfig
from langneurons.stage import Stage


@dataclass(frozen=True)
class FinetuneRunConfig:
    """One fine-tuning run: its ``name``, the training language, the neuron set its neuron modes
    read (``languages``/``random``), and the hyper-parameters of :class:`FinetuneConfig`."""

    name: str
    source_language: str = "en"
    neuron_set: str | None = None
    options: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(task="xnli"))

    @property
    def task(self) -> str:
        return self.options.task


def run(context) -> None:
    from langneurons.finetune import finetune
    from langneurons.tasks.selection import task_examples

    tasks = context.config.tasks
    for run in context.config.finetune:
        neuron_record = context.records[f"identify/{run.neuron_set}"] if run.neuron_set else None
        uses_set = run.options.neurons in ("languages", "random")

        def compute(directory: Path, run=run, uses_set=uses_set) -> None:
            from langneurons.finetune.figures import write_learning_curve

            examples = task_examples(tasks, run.task, run.source_language, "train")
            dev = (task_examples(tasks, run.task, run.source_language, "dev")
                   if getattr(tasks, run.task).dev_limit and run.options.eval_every else None)
            base = context.fresh_base()
            neuron_set = context.neuron_set(run.neuron_set) if uses_set else None
            result = finetune(base, examples, run.options, directory, neuron_set=neuron_set,
                              progress=context.progress, dev_examples=dev, dev_language=run.source_language)
            write_learning_curve(result.metadata, directory, title=f"{run.name}: learning curve")
            del base, result
            gc.collect()

        inputs = {"model": asdict(context.config.model), "run": asdict(run), "data": asdict(getattr(tasks, run.task)),
                  "neurons": neuron_record.product if (neuron_record and uses_set) else None}
        context.stage(f"finetune/{run.name}", inputs, compute,
                      product=("adapter_model.safetensors", "adapter_config.json"))


def finetune_section(run_dir: Path, manifest: dict) -> list[Block]:
    folders = stage_folders(run_dir, manifest, "finetune", "langneurons_finetune.json")
    if not folders:
        return []
    rows = []
    for folder in folders:
        meta = read_json(folder / "langneurons_finetune.json")
        neurons = meta.get("neurons", {})
        params = meta.get("parameters", {})
        rows.append([folder.name, meta.get("task", ""), neurons.get("mode", ""),
                     ",".join(neurons.get("languages", [])) or "–", str(neurons.get("count", 0)),
                     f"{params.get('trainable', '?'):,}" if isinstance(params.get("trainable"), int) else "?",
                     f"{meta.get('step')}/{meta.get('total_steps')}",
                     fmt_number((meta.get("smoothed_loss") or [meta.get("final_loss")])[-1], 4),
                     _dev_scores(meta.get("curve", [])),
                     str(meta.get("data", {}).get("examples", "?"))])
    blocks: list[Block] = [
        ("h2", "Fine-tuning"),
        ("p", "Final loss: moving average of the last 20 steps' training loss (nats per target token). "
              "Dev: the held-out development score (%) before training → at the end."),
        ("table", ["run", "task", "neurons", "languages", "trained neurons", "trainable parameters", "steps",
                   "final loss", "dev", "examples"], rows)]
    for folder in folders:
        if (folder / "learning_curve.png").exists():
            blocks.append(("image", folder / "learning_curve.png", f"{folder.name}: learning curve"))
    return blocks


def _dev_scores(curve: list) -> str:
    if not curve:
        return "–"
    return f"{curve[0]['dev_score']:.1f} → {curve[-1]['dev_score']:.1f} (n={curve[-1]['dev_n']})"


FINETUNE = Stage("finetune", "finetune", run, report=finetune_section, published=(
    "finetune/*/langneurons_finetune.json", "finetune/*/learning_curve.*"))
