"""The ``finetune`` stages (section ``finetune:``, one per run): LoRA / neuron-LoRA adapters (or
neuron rows) and learning curves, LM-task runs' perplexities, and the ``lm_eval_ppl`` stages (the
subnetwork claim's per-block NLLs); the run config, cached runs, report section and published files."""

from __future__ import annotations

import gc
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from langneurons.artefacts import write_json
from langneurons.blocks import Block, fmt_number, read_json, stage_folders
from langneurons.errors import LangNeuronsError
from langneurons.finetune.lm_task import LM_TASK
from langneurons.finetune.options import STAGE_KEY_DEFAULTS, FinetuneConfig
from langneurons.finetune.rows import ROWS_FILE
from langneurons.stage import Stage


@dataclass(frozen=True)
class FinetuneRunConfig:
    """One fine-tuning run: its ``name``, the training language, the neuron set its neuron modes
    read (``languages``/``random``), and the hyper-parameters of :class:`FinetuneConfig`."""

    name: str
    source_language: str = "en"
    neuron_set: str | None = None
    options: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(task="xnli"))
    equal_parameters_to: str | None = None
    """A run training neuron rows (``adapter: rows``): this LoRA run's rank is the one whose trainable
    parameters are nearest to that run's (:func:`langneurons.finetune.rows.equal_parameters`)."""

    @property
    def task(self) -> str:
        return self.options.task


SEED_SEPARATOR = "@"
"""A run with ``seeds: [0, 1, 2]`` becomes runs ``<name>@0``, ``<name>@1``, ``<name>@2``."""


def seed_groups(runs) -> dict[str, list[str]]:
    """Run name before ``@seed`` -> the names of its seeded runs (runs without seeds: themselves)."""
    groups: dict[str, list[str]] = {}
    for run in runs:
        groups.setdefault(run.name.rsplit(SEED_SEPARATOR, 1)[0] if SEED_SEPARATOR in run.name else run.name,
                          []).append(run.name)
    return groups


def run(context) -> None:
    """Every fine-tuning run of the config, in order (a seed's learning-rate search is its first seed's)."""
    for run in context.config.finetune:
        finetune_run(context, run)


def finetune_run(context, run) -> None:
    from langneurons.finetune import finetune
    from langneurons.tasks.selection import task_examples

    tasks = context.config.tasks
    neuron_record = context.records[f"identify/{run.neuron_set}"] if run.neuron_set else None
    uses_set = run.options.neurons in ("languages", "random")
    wants_dev = bool(run.options.eval_every or run.options.learning_rates or run.options.patience)
    first_seed = _first_seed(context.config, run) if run.options.learning_rates else None
    lm_text = run.task == LM_TASK

    def compute(directory: Path) -> None:
        from langneurons.finetune.figures import write_learning_curve

        if lm_text:  # train / dev / eval parts of the language's held-out (or other) text
            parts = lm_parts(context.config, run.source_language)
            examples, dev = parts["train"], (parts["dev"] or None) if wants_dev else None
        else:  # the test split is never read here (learning-rate choice and stopping use dev only)
            examples = task_examples(tasks, run.task, run.source_language, "train")
            dev = (task_examples(tasks, run.task, run.source_language, "dev")
                   if getattr(tasks, run.task).dev_limit and wants_dev else None)
        options = _equal_parameters(context, run, directory)
        base = context.fresh_base()
        neuron_set = context.neuron_set(run.neuron_set) if uses_set else None
        search = None
        if first_seed is not None:  # one learning-rate search per run, not per seed
            search = json.loads((context.run_dir / "finetune" / first_seed / "langneurons_finetune.json")
                                .read_text(encoding="utf-8"))["lr_search"]
        result = finetune(base, examples, options, directory, neuron_set=neuron_set, progress=context.progress,
                          dev_examples=dev, dev_language=run.source_language, lr_search=search)
        write_learning_curve(result.metadata, directory, title=f"{run.name}: learning curve")
        if lm_text:
            _write_lm_perplexity(context, result.model, parts["eval"], run, directory)
        del base, result
        gc.collect()

    inputs = {"model": asdict(context.config.model), "run": run_inputs(run), "data": asdict(getattr(tasks, run.task)),
              "neurons": neuron_record.product if (neuron_record and uses_set) else None}
    if lm_text:
        inputs["statistics"] = asdict(context.config.statistics) if tasks.lm.source == "heldout" else None
    if first_seed is not None:
        inputs["lr_search_from"] = context.records[f"finetune/{first_seed}"].product
    if run.equal_parameters_to is not None:
        matched = context.config.run(run.equal_parameters_to)
        inputs["equal_parameters_to"] = {"run": run_inputs(matched), "neurons": context.records[
            f"identify/{matched.neuron_set}"].product if matched.neuron_set else None}
    product = (ROWS_FILE,) if run.options.adapter == "rows" else ("adapter_model.safetensors", "adapter_config.json")
    context.stage(f"finetune/{run.name}", inputs, compute, product=product + (("perplexity.json",) * lm_text))


def run_inputs(run: FinetuneRunConfig) -> dict:
    """The run as its stage's cache key sees it: options at a :data:`STAGE_KEY_DEFAULTS` value left out."""
    data = asdict(run)
    for name, default in STAGE_KEY_DEFAULTS.items():
        if data["options"].get(name) == default:
            del data["options"][name]
    return data


def _first_seed(config, run) -> str | None:
    """The first seeded run of ``run``'s group (``name@seed``) when ``run`` is a later one, else None."""
    group = next(members for members in seed_groups(config.finetune).values() if run.name in members)
    return group[0] if len(group) > 1 and group[0] != run.name else None


def _equal_parameters(context, run, directory: Path):
    """The run's options, with ``lora_r`` set to match the trainable parameters of the rows run
    ``run.equal_parameters_to`` (sizes written to ``equal_parameters.json``)."""
    if run.equal_parameters_to is None:
        return run.options
    from langneurons.finetune.neurons import training_neurons
    from langneurons.finetune.rows import equal_parameters, lora_targets

    def mask(of):
        options = of.options.resolved()
        uses = options.neurons in ("languages", "random")
        return training_neurons(options, context.loaded.info, context.neuron_set(of.neuron_set) if uses else None)[0]

    matched = context.config.run(run.equal_parameters_to)
    own = run.options.resolved()
    sizes = equal_parameters(context.loaded.adapter, mask(matched), lora_targets(context.loaded.adapter, own, mask(run)),
                             matched.options.resolved().mlp_targets)
    write_json(directory / "equal_parameters.json", {"matched_run": matched.name, **asdict(sizes)})
    return replace(run.options, lora_r=sizes.rank)


def perplexity_role(run) -> str | None:
    """An LM-task run's arm in the subnetwork claim: ``lape-rows`` (rows of a language's neurons),
    ``random-rows``, ``lora``; None for other runs (e.g. the rows of all neurons)."""
    if run.options.adapter == "lora":
        return "lora"
    return {"languages": "lape-rows", "random": "random-rows"}.get(run.options.neurons)


def lm_perplexity_models(config) -> list[str]:
    """``base`` and every LM-task run with a role in the subnetwork claim (none without LM runs)."""
    named = [run.name for run in config.finetune if run.task == LM_TASK and perplexity_role(run)]
    return ["base"] + named if named else []


def run_lm_perplexity(context) -> None:
    """The subnetwork claim's per-block NLLs, one stage per model (none without LM-task runs)."""
    for name in lm_perplexity_models(context.config):
        lm_perplexity(context, name)


def lm_perplexity(context, model_name: str) -> None:
    """Per-block NLL of ``model_name`` on the eval part of its LM text (every target language for
    ``base``) -> ``lm_eval_ppl/<model>/perplexity.json`` (:class:`PerplexityUnits`)."""
    from langneurons.finetune import load_finetuned
    from langneurons.finetune.lm_task import lm_blocks
    from langneurons.finetune.perplexity_units import PerplexityUnits
    from langneurons.intervene.perplexity import perplexity

    config = context.config
    section = config.tasks.lm
    lm_runs = [run for run in config.finetune if run.task == LM_TASK and perplexity_role(run)]
    run = None if model_name == "base" else config.run(model_name)
    languages = sorted({r.source_language for r in lm_runs}) if run is None else [run.source_language]
    batch_size = config.evaluation.batch_size if config.evaluation is not None else 8

    def compute(directory: Path) -> None:
        if run is None:
            model, parameters = context.loaded, None
        else:
            folder = context.run_dir / "finetune" / model_name
            model = load_finetuned(folder, base=context.fresh_base())
            parameters = json.loads((folder / "langneurons_finetune.json").read_text())["parameters"]["trainable"]
        units = {}
        for language in languages:
            blocks = lm_blocks(model.tokenizer, lm_parts(config, language)["eval"], language, section.block_length,
                               section.eval_token_budget)
            result = perplexity(model, blocks, batch_size=batch_size, progress=context.progress)
            units[language] = [{"id": f"block-{i}", "nll": nll, "tokens": tokens}
                               for i, (nll, tokens) in enumerate(zip(result.block_nll, result.block_tokens))]
        PerplexityUnits(model_name, "baseline" if run is None else perplexity_role(run),
                        None if run is None else run.source_language, parameters, units
                        ).write(directory / "perplexity.json")

    inputs = {"model": asdict(config.model), "lm": asdict(section), "languages": languages,
              "statistics": asdict(config.statistics) if section.source == "heldout" else None,
              "adapter": None if run is None else context.records[f"finetune/{model_name}"].product,
              "batch_size": batch_size}
    context.stage(f"lm_eval_ppl/{model_name}", inputs, compute, product=("perplexity.json",))


def lm_parts(config, language: str) -> dict[str, list[str]]:
    """The train / dev / eval parts of ``language``'s LM text as ``tasks.lm`` selects them."""
    from langneurons.finetune.lm_task import LMText, lm_split

    section = config.tasks.lm
    spec = LMText(section.source, language, section.eval_fraction, section.dev_fraction, section.seed,
                  section.max_documents)
    return lm_split(spec, asdict(config.statistics))


def _write_lm_perplexity(context, tuned, texts: list[str], run, directory: Path) -> None:
    """Perplexity of base and tuned model on the LM text's ``eval`` part (never identified on or
    trained on) -> ``perplexity.json``."""
    from langneurons.finetune.lm_task import perplexity_before_after

    if not texts:
        raise LangNeuronsError(f"finetune/{run.name}: tasks.lm.eval_fraction leaves no text to score")
    tuned.model.eval()
    section = context.config.tasks.lm
    record = perplexity_before_after(context.loaded, tuned, texts, run.source_language, section.block_length,
                                     batch_size=run.options.batch_size, token_budget=section.eval_token_budget)
    write_json(directory / "perplexity.json", dict(record, run=run.name))


def _learning_rate(meta: dict) -> str:
    rate = (meta.get("config") or {}).get("learning_rate")
    search = meta.get("lr_search")
    if rate is None:
        return "?"
    if not search:
        return f"{rate:g}"
    losses = search.get("dev_losses") or [None] * len(search["candidates"])
    tried = ", ".join(f"{r:g}: {s:.1f}" + ("" if loss is None else f" / {loss:.3f} nats")
                      for r, s, loss in zip(search["candidates"], search["dev_scores"], losses))
    by = "" if "selection" not in search else f"; by {search['selection']}"
    from langneurons.finetune.selection import EDGE_SIDE, learning_rate_edge

    edge = learning_rate_edge(meta)
    edge = "" if edge is None else f"; the grid's {edge}: a better rate may lie {EDGE_SIDE[edge]} it"
    return f"{rate:g} (dev, {search['steps']} steps: {tried}{by}{edge})"


def finetune_section(run_dir: Path, manifest: dict) -> list[Block]:
    folders = stage_folders(run_dir, manifest, "finetune", "langneurons_finetune.json")
    if not folders:
        return []
    rows = []
    for folder in folders:
        meta = read_json(folder / "langneurons_finetune.json")
        neurons = meta.get("neurons", {})
        params = meta.get("parameters", {})
        rows.append([folder.name, meta.get("task", ""),
                     neurons.get("mode", "") + (" (own rows)" if meta.get("adapter") == "rows" else ""),
                     ",".join(neurons.get("languages", [])) or "–", str(neurons.get("count", 0)),
                     f"{params.get('trainable', '?'):,}" if isinstance(params.get("trainable"), int) else "?",
                     f"{meta.get('step')}/{meta.get('total_steps')}",
                     fmt_number((meta.get("smoothed_loss") or [meta.get("final_loss")])[-1], 4),
                     _dev_scores(meta.get("curve", []), meta.get("early_stopping")),
                     _learning_rate(meta),
                     str(meta.get("data", {}).get("examples", "?"))])
    blocks: list[Block] = [
        ("h2", "Fine-tuning"),
        ("p", "Final loss: moving average of the last 20 steps' training loss (nats per target token). "
              "Dev: the held-out development score (%; LM task: perplexity) before training → at the end "
              "(with early stopping: → of the kept adapter, at its step). Learning rate: where a search ran, "
              "chosen on the dev split from the candidates listed (their dev scores after the search's steps, and "
              "their dev loss in nats: XNLI gold-label cross-entropy, LM log perplexity; 'by score' breaks ties "
              "by the lower loss, 'by loss' ranks by it)."),
        ("table", ["run", "task", "neurons", "languages", "trained neurons", "trainable parameters", "steps",
                   "final loss", "dev", "learning rate", "examples"], rows)]
    for folder in folders:
        if (folder / "learning_curve.png").exists():
            blocks.append(("image", folder / "learning_curve.png", f"{folder.name}: learning curve"))
    return blocks


def _dev_scores(curve: list, early_stopping: dict | None = None) -> str:
    if not curve:
        return "–"
    text = f"{curve[0]['dev_score']:.1f} → {curve[-1]['dev_score']:.1f} (n={curve[-1]['dev_n']})"
    if early_stopping and early_stopping.get("best_step") is not None:
        text += f"; kept step {early_stopping['best_step']}: {early_stopping['best_score']:.1f}"
    return text


FINETUNE = Stage("finetune", "finetune", run, report=finetune_section, published=(
    "finetune/*/langneurons_finetune.json", "finetune/*/learning_curve.*", "finetune/*/perplexity.json",
    "finetune/*/equal_parameters.json"))
LM_PERPLEXITY = Stage("lm_perplexity", "finetune", run_lm_perplexity, published=("lm_eval_ppl/*/perplexity.json",))
