"""``python -m langneurons.harness ARGS``: the lm-evaluation-harness command line (``lm_eval ARGS``)
with the ``langneurons`` model registered, e.g.::

    python -m langneurons.harness run --model langneurons \\
        --model_args model=gemma3-270m,intervention=runs/lape.json:hi:zero --tasks xnli_hi --device cpu
"""

from __future__ import annotations

import sys

from langneurons.errors import LangNeuronsError
from langneurons.harness import register


def main() -> None:
    try:
        register()
        from lm_eval.__main__ import cli_evaluate
    except LangNeuronsError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    sys.argv[0] = "lm_eval"
    try:
        cli_evaluate()
    except LangNeuronsError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
