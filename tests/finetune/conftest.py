import pytest
import torch

from langneurons.identify.neuron_set import NeuronSet
from langneurons.models.loading import describe
from langneurons.tasks import NLIExample, QAExample


def tiny_loaded(family: str = "llama", seed: int = 0):
    from tiny import tiny_model, tiny_tokenizer

    loaded = describe(tiny_model(family, seed=seed), model_id=f"tiny-{family}")
    loaded.tokenizer = tiny_tokenizer()
    return loaded


def chosen_mask(loaded) -> torch.Tensor:
    """Neurons 1, 5, 7 of layer 0 and 0, 3 of layer 1 (every tiny model has 2 layers)."""
    mask = torch.zeros(loaded.info.num_layers, loaded.info.neurons_per_layer, dtype=torch.bool)
    mask[0, [1, 5, 7]] = True
    mask[1, [0, 3]] = True
    return mask


def neuron_set_for(loaded) -> NeuronSet:
    en = chosen_mask(loaded)
    fr = torch.zeros_like(en)
    fr[1, [3, 9]] = True
    source = {"model_id": loaded.info.model_id, "weights_fingerprint": loaded.info.weights_fingerprint}
    return NeuronSet.from_masks({"en": en, "fr": fr}, "lape", {}, source)


def qa_examples(count: int = 6) -> list[QAExample]:
    context = "the cat sat on the mat"
    return [QAExample(f"q{i}", 0, "", context, "where is the cat" if i % 2 else "who sat",
                      ("on the mat",) if i % 2 else ("the cat",), (12,) if i % 2 else (0,)) for i in range(count)]


def nli_examples(count: int = 6) -> list[NLIExample]:
    pairs = [("the cat sat on the mat", "the cat sat"), ("le chat est sur le tapis", "le chat"),
             ("el gato", "the mat sat on the cat")]
    return [NLIExample(f"n{i}", *pairs[i % 3], label=i % 3) for i in range(count)]


@pytest.fixture
def make_loaded():
    """``make_loaded(family="llama", seed=0)`` -> a fresh tiny LoadedModel with the tiny tokenizer."""
    return tiny_loaded


@pytest.fixture
def make_neuron_set():
    """``make_neuron_set(loaded)`` -> NeuronSet with en = :func:`chosen_mask` and fr = layer 1 {3, 9}."""
    return neuron_set_for


@pytest.fixture
def chosen():
    """``chosen(loaded)`` -> the bool [layers, neurons] mask of :func:`chosen_mask`."""
    return chosen_mask


@pytest.fixture
def qa_data():
    """``qa_data(count=6)`` -> tiny QAExamples."""
    return qa_examples


@pytest.fixture
def nli_data():
    """``nli_data(count=6)`` -> tiny NLIExamples, labels cycling 0, 1, 2."""
    return nli_examples
