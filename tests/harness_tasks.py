"""Local lm-evaluation-harness tasks for the offline tests: multiple-choice and generate-until YAML over a
JSON-lines file the tests write (no hub access)."""

import json

import torch

MC_TASK, GEN_TASK = "tiny_mc", "tiny_gen"

_MC = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{premise}}}} ?"
doc_to_choice: ["yes", "no", "maybe"]
doc_to_target: label
metric_list:
  - metric: acc
"""

_GEN = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
"""

_SENTENCES = ["the cat sat on the mat", "le chat est sur le tapis", "el gato está en la alfombra", "the mat sat",
              "le tapis", "la alfombra del gato", "the cat", "sur le chat", "on the mat the cat sat"]


def write_task_folder(folder, docs=None):
    """``folder`` with data.jsonl (9 documents) and the tasks tiny_mc and tiny_gen; returns folder."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = docs or [{"premise": s, "label": i % 3, "question": s[:8], "answer": s[8:12].strip() or "cat"}
                    for i, s in enumerate(_SENTENCES)]
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    (folder / "mc.yaml").write_text(_MC.format(name=MC_TASK, data=data), encoding="utf-8")
    (folder / "gen.yaml").write_text(_GEN.format(name=GEN_TASK, data=data), encoding="utf-8")
    return folder



def chosen_neurons():
    """(layer, neuron) rows of the set's 'en' neurons: 1, 5, 7 of layer 0 and 0, 3, 40 of layer 1."""
    return torch.tensor([[0, 1], [0, 5], [0, 7], [1, 0], [1, 3], [1, 40]])
