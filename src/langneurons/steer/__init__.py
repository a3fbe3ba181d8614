"""Language steering: make the model write in a target language by intervening on neurons,
measured on the generated text by a language identifier.

* :mod:`.langid`: the offline identifier (lingua) and its coverage of the language table;
* :mod:`.metric`: per-condition rates (target / source / other) with Wilson intervals;
* :mod:`.prompts`: source-language prompts (first words of sentences);
* :mod:`.experiment`: conditions, batched steered generation, fluency (:func:`run_steering`);
* :mod:`.api`: the stage API of ``langneurons steer`` (:func:`steer`, files and figures).
"""

from langneurons.steer.experiment import SteeringOptions, SteeringResult, run_steering
from langneurons.steer.langid import Identification, LinguaIdentifier, covered_languages, uncovered_languages
from langneurons.steer.metric import LanguageRates, Rate, language_rates
from langneurons.steer.api import steer

__all__ = [
    "Identification",
    "LanguageRates",
    "LinguaIdentifier",
    "Rate",
    "SteeringOptions",
    "SteeringResult",
    "covered_languages",
    "language_rates",
    "run_steering",
    "steer",
    "uncovered_languages",
]
