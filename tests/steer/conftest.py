"""A tiny Llama in which steering is planted, a word-level tokenizer and a fake identifier.

Vocabulary: <pad>=0, <bos>=1, <eos>=2 and words ``w3`` ... ``w383``; words w100-w199 are
"English", w200-w299 "French". The model (2 layers, 48 neurons) is set up so that:

* attention writes nothing (o_proj = 0) and every MLP writes nothing (down_proj = 0) except
  neuron ``PLANTED`` of layer 1, whose down column writes 10 x e0 into the residual stream;
* every embedding has e1 = 3 (so the neuron's up projection, reading e1, is about +4) and e2 =
  +3 for French words, -3 for the others (so its gate, reading e2, makes it fire on French only);
* the LM head scores English words by e1 (+4 x e1) and French words by e0 (+4 x e0).

Unintervened, the model continues any English prompt in English (e0 = 0); adding to the
planted neuron puts a large e0 into the residual and the continuation turns French. Every other
neuron has a zero down column, so intervening on it (the random control) changes nothing.
"""

from __future__ import annotations

import re

import pytest
import torch
from tiny import tiny_model

from langneurons.activations.collect import CollectConfig, collect_statistics
from langneurons.corpus.packing import pack_blocks
from langneurons.models.loading import describe
from langneurons.steer.langid import Identification

PLANTED = 7
ENGLISH, FRENCH = range(100, 200), range(200, 300)


def word_tokenizer():
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, **{f"w{i}": i for i in range(3, 384)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>",
                                      pad_token="<pad>")
    from tokenizers import processors

    fast._tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return fast


def planted_model():
    model = tiny_model("llama", seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        embedding = model.model.embed_tokens.weight
        embedding.copy_(0.1 * torch.randn(embedding.shape, generator=generator))
        embedding[:, 0] = 0.0
        embedding[:, 1] = 3.0
        embedding[:, 2] = -3.0
        embedding[FRENCH.start : FRENCH.stop, 2] = 3.0
        head = model.lm_head.weight
        head.copy_(0.01 * torch.randn(head.shape, generator=generator))
        head[:, 0] = 0.0
        head[:, 1] = 0.0
        head[ENGLISH.start : ENGLISH.stop, 1] = 4.0
        head[FRENCH.start : FRENCH.stop, 0] = 4.0
        # word w(k+1) reads word wk's random embedding dimensions: continuations count upwards, not loop
        head[4:, 3:] = 10.0 * embedding[3:-1, 3:]
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        mlp = model.model.layers[1].mlp
        mlp.gate_proj.weight[PLANTED] = 0.0
        mlp.gate_proj.weight[PLANTED, 2] = 1.0
        mlp.up_proj.weight[PLANTED] = 0.0
        mlp.up_proj.weight[PLANTED, 1] = 1.0
        mlp.down_proj.weight[0, PLANTED] = 10.0
    return model


class WordRangeIdentifier:
    """Fake identifier: a text is the language of the majority of its ``wNNN`` words (en for
    100-199, fr for 200-299, hi for 300-383), undetermined without words; confidence = share."""

    name = "word-range"
    ranges = {"en": range(100, 200), "fr": range(200, 300), "hi": range(300, 384)}

    def covers(self, code):
        return code in self.ranges

    def identify(self, texts):
        out = []
        for text in texts:
            ids = [int(w) for w in re.findall(r"w(\d+)", text)]
            if not ids:
                out.append(Identification(None, 0.0))
                continue
            counts = {code: sum(i in r for i in ids) for code, r in self.ranges.items()}
            code = max(counts, key=counts.get)
            out.append(Identification(code if counts[code] else None, counts[code] / len(ids)))
        return out


def english_prompts(count=6, length=4):
    return [" ".join(f"w{100 + 7 * i + j}" for j in range(length)) for i in range(count)]


@pytest.fixture
def fake_identifier():
    return WordRangeIdentifier()


@pytest.fixture
def english():
    """Six English prompts of four words."""
    return {"en": english_prompts()}


@pytest.fixture
def planted_neuron():
    return PLANTED


@pytest.fixture
def planted():
    loaded = describe(planted_model(), model_id="tiny-planted")
    loaded.tokenizer = word_tokenizer()
    return loaded


@pytest.fixture
def planted_statistics(planted):
    """Real statistics of the planted model: English text, French text."""
    texts = {"en": [" ".join(f"w{i}" for i in range(100 + k, 130 + k)) for k in range(0, 40, 5)],
             "fr": [" ".join(f"w{i}" for i in range(200 + k, 230 + k)) for k in range(0, 40, 5)]}
    return {language: collect_statistics(planted, pack_blocks(planted.tokenizer, t, language, block_length=16),
                                         CollectConfig(batch_size=4), progress=False)
            for language, t in texts.items()}


@pytest.fixture
def planted_set(planted, make_neuron_set):
    """fr: the planted neuron and two silent ones of layer 1; en: two silent neurons of layer 1."""
    return make_neuron_set(planted, {"fr": [[1, PLANTED], [1, 20], [0, 5]], "en": [[1, 30], [1, 31]],
                                     "hi": [[0, 9]]}, method="lape")


@pytest.fixture
def make_neuron_set():
    from langneurons.identify.neuron_set import NeuronSet

    def build(loaded, neurons, method="test"):
        info = loaded.info
        source = {"model_id": info.model_id, "weights_fingerprint": info.weights_fingerprint}
        return NeuronSet({l: torch.as_tensor(r, dtype=torch.int64).reshape(-1, 2) for l, r in neurons.items()},
                         info.num_layers, info.neurons_per_layer, method, {}, source)

    return build


@pytest.fixture
def planted_directions(planted):
    """A DiffMean direction set of the planted model, means by hand: English 0; French e2 = 6 after
    block 0 (the embedding's French sign flipped) and e0 = 10, e2 = 6 after block 1 (the planted
    neuron's write); Hindi e3 = 1. So mean(fr) - mean(en) steers English prompts into French at
    either layer (at layer 0 through the planted neuron, at layer 1 directly)."""
    from langneurons.directions.direction_set import DirectionSet

    info, hidden = planted.info, planted.adapter.hidden_size
    means = torch.zeros(3, info.num_layers, hidden)
    means[1, 0, 2] = 6.0
    means[1, 1, 0], means[1, 1, 2] = 10.0, 6.0
    means[2, :, 3] = 1.0
    directions = means - (means.sum(0, keepdim=True) - means) / 2
    source = {"model_id": info.model_id, "weights_fingerprint": info.weights_fingerprint}
    return DirectionSet(directions, ["en", "fr", "hi"], "diffmean", {"rank": 0}, source, means=means,
                        spread=torch.ones(info.num_layers, hidden))
