"""Interventions change exactly the chosen neurons' activations, in one tensor op per layer, and
behave like the equivalent weight edit; hooks never outlive the ``with`` block."""

import copy

import pytest
import torch
from tiny import LAYERS, NEURONS, VOCAB, tiny_model, tiny_tokenizer
from torch.utils._python_dispatch import TorchDispatchMode

from langneurons.errors import LangNeuronsError
from langneurons.hooks import activation_hooks
from langneurons.intervene import build_intervention, intervene
from langneurons.models.architectures import adapter_for

NEURONS_BOTH_LAYERS = torch.tensor([[0, 1], [0, 5], [0, 17], [0, 40], [1, 0], [1, 30], [1, 47]])
LAST_LAYER = torch.tensor([[1, 3], [1, 8], [1, 21], [1, 47]])


def _ids(batch=2, length=7, seed=1):
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _capture(adapter, store):
    """Record every layer's activation (registered after the intervention: sees its result)."""
    return activation_hooks(adapter, lambda layer, a: store.__setitem__(layer, a.detach().clone()))


def _hook_count(adapter):
    entry_points = (adapter.model, adapter.body())
    return sum(len(l.activation._forward_hooks) for l in adapter.layers) + sum(len(m._forward_pre_hooks) for m in entry_points)


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "phi3", "gpt2", "opt"])
def test_zeroing_neurons_equals_zeroing_their_down_projection_columns(family):
    model = tiny_model(family)
    reference = copy.deepcopy(model)
    adapter = adapter_for(reference)
    with torch.no_grad():
        for layer in range(LAYERS):
            rows = NEURONS_BOTH_LAYERS[NEURONS_BOTH_LAYERS[:, 0] == layer, 1]
            adapter.down_neuron_weight(layer)[rows] = 0.0
    ids = _ids()
    zero = build_intervention("zero", NEURONS_BOTH_LAYERS, LAYERS, NEURONS)
    with torch.no_grad():
        baseline = model(input_ids=ids).logits
        expected = reference(input_ids=ids).logits
        with intervene(model, zero):
            intervened = model(input_ids=ids).logits
    assert not torch.allclose(baseline, expected, atol=1e-4)  # the edit matters
    torch.testing.assert_close(intervened, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "opt"])  # opt hooks see flattened [batch * seq, N]
def test_stat_sets_exactly_the_given_values_and_nothing_else_changes(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    table = torch.randn(LAYERS, NEURONS, generator=torch.Generator().manual_seed(3))
    stat = build_intervention("stat", LAST_LAYER, LAYERS, NEURONS, table)
    ids, before, after = _ids(), {}, {}
    with torch.no_grad():
        with _capture(adapter, before):
            model(input_ids=ids)
        with intervene(model, stat), _capture(adapter, after):
            model(input_ids=ids)
    chosen = LAST_LAYER[:, 1]
    others = torch.ones(NEURONS, dtype=torch.bool)
    others[chosen] = False
    assert torch.equal(after[1][..., chosen], table[1, chosen].expand_as(after[1][..., chosen]))
    assert torch.equal(after[1][..., others], before[1][..., others])
    assert torch.equal(after[0], before[0])  # layer 0 is not touched


@pytest.mark.parametrize("kind, value, expected", [
    ("add", torch.full((LAYERS, NEURONS), 0.75), lambda a: a + 0.75),
    ("scale", 3.0, lambda a: a * 3.0),
    ("constant", -0.5, lambda a: torch.full_like(a, -0.5)),
])
def test_add_scale_and_constant_arithmetic(kind, value, expected):
    model = tiny_model("llama")
    adapter = adapter_for(model)
    ids, before, after = _ids(), {}, {}
    with torch.no_grad():
        with _capture(adapter, before):
            model(input_ids=ids)
        with intervene(model, build_intervention(kind, LAST_LAYER, LAYERS, NEURONS, value)), _capture(adapter, after):
            model(input_ids=ids)
    chosen = LAST_LAYER[:, 1]
    torch.testing.assert_close(after[1][..., chosen], expected(before[1][..., chosen]), rtol=0, atol=1e-6)


def test_the_hook_is_one_tensor_operation_whatever_the_number_of_neurons():
    activation = torch.randn(2, 5, NEURONS)

    class CountKernels(TorchDispatchMode):  # every aten kernel the hook launches
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls.append(func)
            return func(*args, **(kwargs or {}))

    for kind, value in [("zero", None), ("scale", 2.0), ("add", torch.ones(LAYERS, NEURONS))]:
        many = build_intervention(kind, torch.stack([torch.ones(40, dtype=torch.long), torch.arange(40)], 1),
                                  LAYERS, NEURONS, value)
        many.apply(1, activation)  # first use builds the cached dense vectors
        with CountKernels() as counter:
            many.apply(1, activation)
        assert len(counter.calls) == 1, (kind, counter.calls)


def test_hooks_are_removed_after_the_block_and_when_the_forward_raises():
    model = tiny_model("llama")
    adapter = adapter_for(model)
    ids = _ids()
    zero = build_intervention("zero", NEURONS_BOTH_LAYERS, LAYERS, NEURONS)
    with torch.no_grad():
        baseline = model(input_ids=ids).logits
        with intervene(model, zero, positions="prompt"):
            assert _hook_count(adapter) == LAYERS + 2
            assert not torch.allclose(model(input_ids=ids).logits, baseline)
        assert _hook_count(adapter) == 0
        assert torch.equal(model(input_ids=ids).logits, baseline)
        with pytest.raises(IndexError):
            with intervene(model, zero, positions="prompt"):
                model(input_ids=torch.full((1, 3), VOCAB + 7))  # embedding lookup fails inside the forward
        assert _hook_count(adapter) == 0
        assert torch.equal(model(input_ids=ids).logits, baseline)


def test_only_layers_with_chosen_neurons_are_hooked():
    model = tiny_model("gpt2")
    adapter = adapter_for(model)
    with intervene(model, build_intervention("zero", LAST_LAYER, LAYERS, NEURONS)):
        assert [len(l.activation._forward_hooks) for l in adapter.layers] == [0, 1]


@pytest.mark.parametrize("positions", ["all", "prompt"])
def test_greedy_generation_with_kv_cache_equals_generation_without_cache(positions):
    model = tiny_model("llama")
    half = torch.stack([torch.arange(48) // 24, torch.arange(48) % 24 * 2], 1)  # 24 neurons per layer
    zero = build_intervention("zero", half, LAYERS, NEURONS)
    prompt = _ids(batch=1, length=6)

    def generate(use_cache, intervention=zero, scope=positions):
        with torch.no_grad(), intervene(model, intervention, positions=scope):
            out = model.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=use_cache, pad_token_id=0,
                                 output_scores=True, return_dict_in_generate=True)
        return out.sequences, torch.stack(out.scores)

    cached, cached_scores = generate(True)
    uncached, uncached_scores = generate(False)
    assert torch.equal(cached, uncached)
    torch.testing.assert_close(cached_scores, uncached_scores, rtol=1e-4, atol=1e-4)
    _, plain_scores = generate(True, build_intervention("zero", torch.zeros(0, 2), LAYERS, NEURONS))
    assert not torch.allclose(cached_scores[0], plain_scores[0])  # the prompt is intervened
    if positions == "prompt":  # generated tokens are not: later steps differ from intervening everywhere
        _, all_scores = generate(True, scope="all")
        torch.testing.assert_close(cached_scores[0], all_scores[0])
        assert not torch.allclose(cached_scores[1:], all_scores[1:])


def test_left_padded_batch_gives_each_example_its_unbatched_result():
    model = tiny_model("llama")
    tokenizer = tiny_tokenizer(padding_side="left")
    texts = ["the cat sat on the mat and the mat", "le chat"]
    stat = build_intervention("stat", NEURONS_BOTH_LAYERS, LAYERS, NEURONS, torch.rand(LAYERS, NEURONS))
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad(), intervene(model, stat):
        batched = model(**batch).logits
        for row, text in enumerate(texts):
            single = tokenizer(text, return_tensors="pt")
            alone = model(**single).logits[0]
            torch.testing.assert_close(batched[row, -alone.shape[0]:], alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_prompt_lengths_limit_the_intervention_to_each_examples_prompt_positions(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    first_layer = torch.tensor([[0, 2], [0, 9]])
    ids, before, after = _ids(batch=2, length=6), {}, {}
    lengths = torch.tensor([2, 5])
    with torch.no_grad():
        with _capture(adapter, before):
            model(input_ids=ids)
        with intervene(model, build_intervention("constant", first_layer, LAYERS, NEURONS, 9.0),
                       positions="prompt", prompt_lengths=lengths), _capture(adapter, after):
            model(input_ids=ids)
    got, ref = after[0].reshape(2, 6, NEURONS), before[0].reshape(2, 6, NEURONS)
    for row, length in enumerate(lengths.tolist()):
        assert (got[row, :length][:, [2, 9]] == 9.0).all()
        assert torch.equal(got[row, length:], ref[row, length:])


def test_prompt_lengths_must_match_the_batch():
    model = tiny_model("llama")
    iv = build_intervention("zero", LAST_LAYER, LAYERS, NEURONS)
    with pytest.raises(LangNeuronsError, match="prompt_lengths"):
        with intervene(model, iv, positions="prompt", prompt_lengths=[3]), torch.no_grad():
            model(input_ids=_ids(batch=2))


def test_gradients_flow_to_other_neurons_and_not_through_zeroed_ones():
    model = tiny_model("llama")
    adapter = adapter_for(model)
    layer0 = NEURONS_BOTH_LAYERS[NEURONS_BOTH_LAYERS[:, 0] == 0, 1]
    seen = {}

    def keep(layer, activation):  # registered before the intervention: the original activation
        activation.retain_grad()
        seen[layer] = activation

    ids = _ids()
    with activation_hooks(adapter, keep), intervene(model, build_intervention("zero", NEURONS_BOTH_LAYERS, LAYERS, NEURONS)):
        model(input_ids=ids, labels=ids).loss.backward()
    grad = seen[0].grad
    others = torch.ones(NEURONS, dtype=torch.bool)
    others[layer0] = False
    assert (grad[..., layer0] == 0).all()
    assert (grad[..., others].abs().sum(dim=(0, 1)) > 0).all()
    gate_grad = adapter.layers[0].gate.weight.grad  # [neurons, hidden]: rows of zeroed neurons get none
    assert (gate_grad[layer0] == 0).all() and (gate_grad[others].abs().sum(1) > 0).all()


def test_values_follow_the_activation_dtype():
    model = tiny_model("llama").to(torch.bfloat16)
    adapter = adapter_for(model)
    table = torch.randn(LAYERS, NEURONS)
    after = {}
    with torch.no_grad(), intervene(model, build_intervention("stat", LAST_LAYER, LAYERS, NEURONS, table)), \
            _capture(adapter, after):
        model(input_ids=_ids())
    assert after[1].dtype == torch.bfloat16
    chosen = LAST_LAYER[:, 1]
    assert torch.equal(after[1][..., chosen], table[1, chosen].to(torch.bfloat16).expand_as(after[1][..., chosen]))


@pytest.mark.parametrize("kind, value, message", [
    ("constant", float("nan"), "finite"),
    ("scale", float("inf"), "finite"),
    ("stat", torch.full((LAYERS, NEURONS), float("nan")), "not finite"),
    ("stat", torch.zeros(3, 3), "table"),
    ("zero", 1.0, "no value"),
    ("melt", None, "unknown intervention kind"),
])
def test_bad_interventions_are_refused(kind, value, message):
    with pytest.raises(LangNeuronsError, match=message):
        build_intervention(kind, LAST_LAYER, LAYERS, NEURONS, value)


def test_an_intervention_for_another_model_size_is_refused():
    model = tiny_model("llama")
    with pytest.raises(LangNeuronsError, match="model"):
        with intervene(model, build_intervention("zero", LAST_LAYER, LAYERS, NEURONS * 2)):
            pass
