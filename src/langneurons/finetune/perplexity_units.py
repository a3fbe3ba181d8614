"""Per-unit held-out NLLs of a model (``lm_eval_ppl/<model>/perplexity.json``): written by the
LM-task stages (:mod:`langneurons.finetune.stage`), read by the subnetwork claim
(:mod:`langneurons.report.claims`)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from langneurons.errors import LangNeuronsError

PERPLEXITY_FILE = "perplexity.json"
PERPLEXITY_FORMAT = "langneurons.perplexity/1"
PERPLEXITY_ROLES = ("baseline", "lape-rows", "random-rows", "lora")


@dataclass
class PerplexityUnits:
    """Held-out negative log-likelihood of one model, per unit of text, as read from
    ``<run>/lm_eval_ppl/<model>/perplexity.json``::

        {"format": "langneurons.perplexity/1",
         "model": "hi-lape-rows",            # the model's name (an evaluate/<model> name for XNLI)
         "role": "lape-rows",                # baseline | lape-rows | random-rows | lora
         "target_language": "hi",            # the language it was tuned on (null for the baseline)
         "trainable_parameters": 221184,     # null for the baseline
         "languages": {"hi": [{"id": "doc-0", "nll": 812.5, "tokens": 301}, ...], ...}}

    A unit is a held-out document or block of text that neither identification nor training saw;
    ``nll`` is its summed token NLL in nats, ``tokens`` the number of predicted tokens (>= 1). Every
    model must be scored on the same unit ids of a language (the bootstrap pairs them)."""

    model: str
    role: str
    target_language: str | None
    trainable_parameters: int | None
    languages: dict[str, list[dict]]

    def to_dict(self) -> dict:
        return {"format": PERPLEXITY_FORMAT, **asdict(self)}

    def write(self, path) -> Path:
        from langneurons.artefacts import write_json

        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data, origin: str = "perplexity data") -> "PerplexityUnits":
        def fail(message: str):
            raise LangNeuronsError(f"{origin}: {message}")

        if not isinstance(data, dict) or data.get("format") != PERPLEXITY_FORMAT:
            fail(f"not a {PERPLEXITY_FORMAT} file (its 'format' must be {PERPLEXITY_FORMAT!r})")
        if data.get("role") not in PERPLEXITY_ROLES:
            fail(f"role must be one of {', '.join(PERPLEXITY_ROLES)}, got {data.get('role')!r}")
        if not isinstance(data.get("model"), str) or not data["model"]:
            fail("model must be a non-empty string")
        target = data.get("target_language")
        if (target is None) != (data["role"] == "baseline"):
            fail("target_language is null exactly for the baseline")
        languages = data.get("languages")
        if not isinstance(languages, dict) or not languages:
            fail("languages must map a language to its list of units")
        for language, units in languages.items():
            if not isinstance(units, list) or not units:
                fail(f"languages.{language} must be a non-empty list of units")
            for unit in units:
                if (not isinstance(unit, dict) or "id" not in unit or not isinstance(unit.get("tokens"), int)
                        or unit["tokens"] < 1 or not isinstance(unit.get("nll"), (int, float))
                        or not math.isfinite(unit["nll"])):
                    fail(f"every unit of {language} needs an id, a finite nll (nats) and tokens >= 1, got {unit!r}")
            if len({str(u["id"]) for u in units}) != len(units):
                fail(f"unit ids of {language} repeat")
        return cls(data["model"], data["role"], target, data.get("trainable_parameters"), languages)

    @classmethod
    def load(cls, path) -> "PerplexityUnits":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise LangNeuronsError(f"cannot read {path}: {error}") from error
        return cls.from_dict(data, str(path))

    def arrays(self, language: str, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(nll [n], tokens [n]) of ``language``'s units in the order of ``ids``."""
        units = {str(u["id"]): u for u in self.languages.get(language, [])}
        if set(units) != set(ids):
            raise LangNeuronsError(f"{self.model} was scored on other {language} units than the baseline; "
                                   "every model needs the same held-out units")
        chosen = [units[i] for i in ids]
        return (torch.tensor([float(u["nll"]) for u in chosen], dtype=torch.float64),
                torch.tensor([float(u["tokens"]) for u in chosen], dtype=torch.float64))
