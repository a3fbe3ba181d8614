"""``python -m langneurons`` (used by ``torchrun -m langneurons collect ...``)."""

from langneurons.cli import main

main()
