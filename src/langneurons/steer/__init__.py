"""Language steering: make the model write in a target language by intervening on neurons,
measured on the generated text by a language identifier.

* :mod:`.langid`: the offline identifier (lingua) and its coverage of the language table;
* :mod:`.metric`: per-condition rates (target / source / other) with Wilson intervals, and the
  loop-aware scores (degenerate and fluent target rates, combined score);
* :mod:`.degeneration`: the loop test (repeated character 4-gram share);
* :mod:`.selection`: the seeded dev/test prompt split and the choice of a best condition on dev;
* :mod:`.prompts`: source-language prompts (first words of sentences);
* :mod:`.experiment`: conditions, batched steered generation, fluency (:func:`run_steering`);
* :mod:`.directions`: DiffMean direction conditions (add / ablate at swept layers and strengths) and
  their matched-norm random twins, run beside the neuron conditions;
* :mod:`.api`: the stage API of ``langneurons steer`` (:func:`steer`, files and figures).
"""

from langneurons.steer.experiment import SteeringOptions, SteeringResult, run_steering
from langneurons.steer.langid import Identification, LinguaIdentifier, covered_languages, uncovered_languages
from langneurons.steer.degeneration import is_degenerate, repeated_ngram_share
from langneurons.steer.metric import (LanguageRates, LoopAwareScores, Rate, combined_score, language_rates,
                                      loop_aware_scores)
from langneurons.steer.selection import best_condition, best_of, split_labels
from langneurons.steer.api import steer

__all__ = [
    "Identification",
    "LanguageRates",
    "LinguaIdentifier",
    "LoopAwareScores",
    "Rate",
    "SteeringOptions",
    "SteeringResult",
    "best_condition",
    "best_of",
    "combined_score",
    "covered_languages",
    "is_degenerate",
    "language_rates",
    "loop_aware_scores",
    "repeated_ngram_share",
    "run_steering",
    "split_labels",
    "steer",
    "uncovered_languages",
]
