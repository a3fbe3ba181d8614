"""Text per language (built-in sample, folders, hub data sets) packed into token blocks."""

from langneurons.corpus.sources import builtin_corpus, load_corpus

__all__ = ["builtin_corpus", "load_corpus"]
