"""``LangNeuronsLM``: the harness's Hugging Face backend with a langneurons model and intervention.

The model is loaded by :func:`langneurons.models.loading.load_model` (hub id, local folder,
``.gguf`` file, the embedded default ``gemma3-270m``; ``dtype``, ``device_map``,
``load_in_4bit``), optionally with a langneurons adapter (:func:`~langneurons.finetune.train.load_finetuned`),
and handed to ``HFLM`` as an initialised model: tokenisation, batching, caching of contexts and
scoring are the harness's own, so a run without intervention gives the plain ``hf`` backend's
numbers.

The intervention (``NEURONS:LANGS:ACTION[:all|prompt]``, :mod:`langneurons.intervene.spec`) is
applied inside every request method through :func:`langneurons.intervene.intervene`, whose hooks
are removed when the call returns or raises:

* scope ``all`` (default): every token of every forward pass of ``loglikelihood``,
  ``loglikelihood_rolling`` and ``generate_until``;
* scope ``prompt``: generation only; each generation batch intervenes on its (left-padded)
  context and not on the generated tokens. Log-likelihood requests refuse it (their one forward
  pass holds context and continuation; splitting it is not supported).

From the harness command line (``python -m langneurons.harness``) the arguments come as
``--model_args model=gemma3-270m,intervention=runs/lape.json:hi:zero``; quote a spec with
commas (``"intervention='lape.json:hi,ur:zero'"``) or pass the arguments as JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from langneurons.errors import LangNeuronsError
from langneurons.harness import MODEL_NAME
from langneurons.intervene import Intervention, intervene
from langneurons.intervene.spec import InterventionSpec, parse_spec, resolve
from langneurons.models.loading import DEFAULT_MODEL, LoadedModel, ModelOptions

log = logging.getLogger(__name__)


def _flag(value) -> bool:
    """Booleans from the harness's ``key=value`` strings (``True``/``true``/``1``)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


@register_model(MODEL_NAME)
class LangNeuronsLM(HFLM):
    """A harness LM over a langneurons model, adapter and (optional) neuron intervention.

    Args:
        model, revision, dtype, device_map, load_in_4bit, gguf_file, trust_remote_code: as in
            :func:`~langneurons.models.loading.load_model` (``pretrained`` is accepted as a
            synonym of ``model``).
        adapter: folder of a langneurons fine-tuning run; loaded onto ``model``.
        intervention: spec string / dict / :class:`InterventionSpec` (resolved on the base
            model, so neuron sets of the base model apply to its adapters), or None.
        statistics: folder written by ``langneurons collect``; needed by ``stat=``/``add=`` actions.
        loaded: an already loaded :class:`LoadedModel` (skips loading; ``model`` etc. ignored).
        device: where to put the model when ``device_map`` is not given (a CUDA device falls
            back to the CPU when there is none, as the ``hf`` backend does).
        **kwargs: passed to ``HFLM`` (``batch_size``, ``max_length``, ``add_bos_token`` ...).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        revision: str | None = None,
        dtype: str = "float32",
        device_map: str | None = None,
        load_in_4bit: bool = False,
        gguf_file: str | None = None,
        trust_remote_code: bool = False,
        adapter: str | None = None,
        intervention: str | Mapping | InterventionSpec | None = None,
        statistics: str | None = None,
        loaded: LoadedModel | None = None,
        device: str | None = None,
        **kwargs,
    ) -> None:
        model = kwargs.pop("pretrained", model)
        if loaded is None:
            options = ModelOptions(str(model), revision=revision, dtype=str(dtype), device_map=device_map,
                                   load_in_4bit=_flag(load_in_4bit), gguf_file=gguf_file)
            loaded = options.load(trust_remote_code=_flag(trust_remote_code))
        self.base = loaded
        self.statistics_dir = statistics
        if adapter:
            from langneurons.finetune.checkpoints import load_finetuned

            loaded = load_finetuned(adapter, base=loaded)
        self.loaded = loaded
        if device and device_map is None and not _flag(load_in_4bit):
            _move(loaded.model, device)
        self.spec: InterventionSpec | None = None
        self.intervention: Intervention | None = None
        self.set_intervention(intervention)
        super().__init__(pretrained=loaded.model, tokenizer=loaded.tokenizer, backend="causal", **kwargs)

    # ------------------------------------------------------------------------- the intervention
    def set_intervention(self, intervention: str | Mapping | InterventionSpec | None, neuron_set=None) -> None:
        """Use ``intervention`` from the next request on (None: no intervention).

        ``neuron_set``: a NeuronSet to use instead of loading the spec's file (e.g. a random control).
        """
        if intervention is None or intervention == "":
            self.spec, self.intervention = None, None
            return
        spec = parse_spec(intervention)
        statistics = None
        if spec.statistics_languages:
            if not self.statistics_dir:
                raise LangNeuronsError(f"intervention {spec.to_string()!r} needs statistics=<folder written by collect>")
            from langneurons.activations.api import load_statistics_dir

            statistics = load_statistics_dir(self.statistics_dir, spec.statistics_languages)
        self.intervention = resolve(spec, neuron_set=neuron_set, statistics_by_language=statistics, loaded=self.base)
        self.spec = spec

    @property
    def positions(self) -> str:
        return self.spec.positions if self.spec is not None else "all"

    def _whole_call(self, request_kind: str):
        """Hooks for one whole request call (scope ``all``); nothing for no / prompt-scoped interventions."""
        if self.intervention is None:
            return nullcontext()
        if self.positions == "prompt":
            if request_kind != "generate_until":
                raise LangNeuronsError(
                    f"intervention scope 'prompt' applies to generation only, not to {request_kind} requests "
                    f"(use scope 'all'): {self.spec.to_string()}")
            return nullcontext()  # one scope per generation batch, in _model_generate
        return intervene(self._model, self.intervention, positions="all")

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        with self._whole_call("loglikelihood"):
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        with self._whole_call("loglikelihood_rolling"):
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)

    def generate_until(self, requests, disable_tqdm: bool = False):
        with self._whole_call("generate_until"):
            return super().generate_until(requests, disable_tqdm=disable_tqdm)

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        scope = (intervene(self._model, self.intervention, positions="prompt")
                 if self.intervention is not None and self.positions == "prompt" else nullcontext())
        with scope:
            return super()._model_generate(context, max_length, stop, **generation_kwargs)

    # ------------------------------------------------------------------------- provenance
    def get_model_info(self) -> dict:
        """What the harness records about the model (no hub look-ups)."""
        info = self.loaded.info
        return {
            "model_num_parameters": sum(p.numel() for p in self._model.parameters()),
            "model_dtype": str(next(self._model.parameters()).dtype),
            "model_revision": info.revision,
            "model_sha": "",
            "langneurons_model": info.to_dict(),
            "langneurons_intervention": self.spec.to_string() if self.spec is not None else None,
        }


def _move(model: torch.nn.Module, device: str) -> None:
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        log.info("no CUDA device; the model stays on the CPU")
        return
    model.to(device)
