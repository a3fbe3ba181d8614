"""Loading a causal LM (:func:`load_model`, :class:`ModelOptions`) and the declarative table of
the architectures whose MLP neurons langneurons reads (:mod:`.architectures`)."""

from langneurons.models.loading import DEFAULT_MODEL, LoadedModel, ModelInfo, ModelOptions, load_model

__all__ = ["DEFAULT_MODEL", "LoadedModel", "ModelInfo", "ModelOptions", "load_model"]
