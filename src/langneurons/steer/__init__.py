"""Language steering: make the model write in a target language by intervening on neurons,
measured on the generated text by a language identifier.

* :mod:`.langid`: the offline identifier (lingua) and its coverage of the language table;
* :mod:`.metric`: per-condition rates (target / source / other) with Wilson intervals.
"""
