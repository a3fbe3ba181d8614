"""langneurons: find, test and manipulate the language-specific neurons of multilingual LLMs.

Pipeline (one package per stage): corpus -> activations -> identify -> intervene -> finetune
-> evaluate -> report. The CLI (``langneurons``) only calls the functions exported here.
"""

__version__ = "0.1.0"
