"""Interventions on the residual stream after a block, through the one hook abstraction and the
same ``intervene`` as the neuron interventions: ablation leaves no component along the direction
(or subspace); adding 0 x d changes nothing, bit for bit; adding a x d shifts the block output by
exactly a x d; KV-cached greedy generation equals uncached; hooks go away even when the forward
pass raises."""

import pytest
import torch

from langneurons.directions.direction_set import DirectionSet
from langneurons.directions.interventions import (
    DirectionIntervention,
    ablate_direction,
    ablate_subspace,
    add_direction,
    erase_direction,
)
from langneurons.errors import LangNeuronsError
from langneurons.hooks import residual_hooks
from langneurons.intervene.interventions import intervene
from langneurons.intervene.perplexity import perplexity

FAMILIES = ["llama", "gemma", "gemma3", "gpt2", "bloom"]  # gated Llama/Gemma, multimodal Gemma 3, GPT-2, tuple outputs
INPUT = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46], [1, 50, 51, 52, 53, 54, 55, 56]])


def random_set(loaded, seed: int = 0, rank: int = 0) -> DirectionSet:
    generator = torch.Generator().manual_seed(seed)
    layers, hidden = loaded.adapter.num_layers, loaded.adapter.hidden_size
    directions = torch.randn(2, layers, hidden, generator=generator)
    subspace = torch.linalg.qr(torch.randn(layers, hidden, rank, generator=generator)).Q.transpose(1, 2) if rank else None
    means = torch.randn(2, layers, hidden, generator=generator)
    return DirectionSet(directions, ["en", "fr"], "test", source={"weights_fingerprint": loaded.info.weights_fingerprint},
                        means=means, subspace=subspace)


def block_outputs(loaded, intervention=None, **kwargs) -> dict[int, torch.Tensor]:
    """Every block's output (after any intervention: this hook is registered after it)."""
    seen = {}
    context = intervene(loaded, intervention, **kwargs) if intervention is not None else _nothing()
    with context, residual_hooks(loaded.adapter, lambda layer, h: seen.__setitem__(layer, h.detach().clone())), \
            torch.no_grad():
        loaded.adapter.model(input_ids=INPUT)
    return seen


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("family", FAMILIES)
def test_after_ablation_the_block_output_has_no_component_along_the_direction(family, make_loaded):
    loaded = make_loaded(family)
    directions = random_set(loaded)
    outputs = block_outputs(loaded, ablate_direction(directions, "en"))
    before = block_outputs(loaded)
    for layer, hidden in outputs.items():
        unit = directions.direction("en")[layer] / directions.direction("en")[layer].norm()
        assert (before[layer] @ unit).abs().max() > 1e-2  # there was a component to remove
        assert (hidden @ unit).abs().max() < 1e-5 * hidden.norm(dim=-1).max()


def test_ablating_at_one_layer_changes_only_that_layer_and_what_follows(make_loaded):
    loaded = make_loaded("llama")
    directions = random_set(loaded)
    before, after = block_outputs(loaded), block_outputs(loaded, ablate_direction(directions, "en", layers=[1]))
    assert torch.equal(before[0], after[0])
    unit = directions.direction("en")[1] / directions.direction("en")[1].norm()
    torch.testing.assert_close(after[1], before[1] - (before[1] @ unit)[..., None] * unit, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_after_subspace_ablation_no_component_along_any_basis_row(family, make_loaded):
    loaded = make_loaded(family)
    directions = random_set(loaded, rank=3)
    for layer, hidden in block_outputs(loaded, ablate_subspace(directions)).items():
        assert (hidden @ directions.subspace[layer].T).abs().max() < 1e-5 * hidden.norm(dim=-1).max()


@pytest.mark.parametrize("family", ["llama", "gemma", "gpt2"])
def test_adding_zero_times_a_direction_is_bit_identical_to_no_hook(family, make_loaded):
    loaded = make_loaded(family)
    intervention = add_direction(random_set(loaded), 0.0, language="en")
    with torch.no_grad():
        plain = loaded.adapter.model(input_ids=INPUT).logits
        with intervene(loaded, intervention):
            added = loaded.adapter.model(input_ids=INPUT).logits
    assert torch.equal(plain, added)


def test_adding_shifts_the_block_output_by_exactly_a_times_d(make_loaded):
    loaded = make_loaded("llama")
    directions = random_set(loaded)
    before = block_outputs(loaded)
    after = block_outputs(loaded, add_direction(directions, 2.5, language="fr", layers=[0]))
    torch.testing.assert_close(after[0] - before[0], (2.5 * directions.direction("fr")[0]).expand_as(before[0]))
    steer = add_direction(directions, 2.0, source="en", target="fr", layers=[1])
    torch.testing.assert_close(steer.vectors[1], 2.0 * (directions.means[1, 1] - directions.means[0, 1]))


def test_prompt_scope_leaves_generated_positions_alone(make_loaded):
    loaded = make_loaded("llama")
    intervention = add_direction(random_set(loaded), 3.0, language="en", layers=[0])
    before = block_outputs(loaded)
    prompt_only = block_outputs(loaded, intervention, positions="prompt", prompt_lengths=[5, 5])
    assert not torch.equal(prompt_only[0][:, :5], before[0][:, :5])
    assert torch.equal(prompt_only[0][:, 5:], before[0][:, 5:])


@pytest.mark.parametrize("family", ["llama", "gemma", "gpt2"])
@pytest.mark.parametrize("positions", ["all", "prompt"])
def test_kv_cached_greedy_generation_equals_uncached(family, positions, make_loaded):
    loaded = make_loaded(family)
    intervention = add_direction(random_set(loaded), 4.0, language="en")
    runs = []
    for use_cache in (True, False):
        with intervene(loaded, intervention, positions=positions), torch.no_grad():
            runs.append(loaded.adapter.model.generate(input_ids=INPUT, attention_mask=torch.ones_like(INPUT),
                                                      max_new_tokens=6, do_sample=False, use_cache=use_cache,
                                                      pad_token_id=0))
    with torch.no_grad():
        plain = loaded.adapter.model.generate(input_ids=INPUT, attention_mask=torch.ones_like(INPUT), max_new_tokens=6,
                                              do_sample=False, pad_token_id=0)
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], plain)  # the intervention does steer the continuation


def _hook_count(loaded) -> int:
    return sum(len(block._forward_hooks) for block in loaded.adapter.blocks)


def test_hooks_are_removed_even_when_the_forward_pass_raises(make_loaded):
    loaded = make_loaded("llama")
    intervention = add_direction(random_set(loaded), 1.0, language="en")

    def failing(layer, hidden):
        raise RuntimeError("boom in the hook")

    intervention.apply = failing
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(loaded, intervention), torch.no_grad():
            loaded.adapter.model(input_ids=INPUT)
    assert _hook_count(loaded) == 0
    with pytest.raises(RuntimeError, match="outside"):
        with intervene(loaded, ablate_direction(random_set(loaded), "en")):
            assert _hook_count(loaded) == loaded.adapter.num_layers
            raise RuntimeError("outside the forward pass")
    assert _hook_count(loaded) == 0


def test_perplexity_accepts_a_direction_intervention(make_loaded, blocks_by_language):
    loaded = make_loaded("llama")
    blocks = blocks_by_language["en"]
    base = perplexity(loaded, blocks, progress=False)
    ablated = perplexity(loaded, blocks, intervention=ablate_direction(random_set(loaded), "en"), progress=False)
    assert ablated.token_count == base.token_count and ablated.mean_nll != base.mean_nll


def test_bad_interventions_are_refused(make_loaded):
    loaded = make_loaded("llama")
    directions = random_set(loaded)
    with pytest.raises(LangNeuronsError, match="orthonormal"):
        DirectionIntervention("ablate", 2, 32, {0: torch.ones(32)})
    with pytest.raises(LangNeuronsError, match="zero"):
        DirectionIntervention.ablation({0: torch.zeros(32)}, 2)
    with pytest.raises(LangNeuronsError, match="outside"):
        ablate_direction(directions, "en", layers=[2])
    with pytest.raises(LangNeuronsError, match="finite"):
        add_direction(directions, float("inf"), language="en")
    with pytest.raises(LangNeuronsError, match="not both"):
        add_direction(directions, 1.0, language="en", source="en", target="fr")
    with pytest.raises(LangNeuronsError, match="subspace"):
        ablate_subspace(directions)
    other = make_loaded("gpt2")
    with pytest.raises(LangNeuronsError, match="width|layers"):
        with intervene(other, DirectionIntervention.addition({0: torch.ones(16)}, 2)):
            pass


def test_the_key_says_what_the_intervention_does(make_loaded):
    directions = random_set(make_loaded("llama"))
    assert ablate_direction(directions, "en").key() == ablate_direction(directions, "en").key()
    assert ablate_direction(directions, "en").key() != ablate_direction(directions, "fr").key()
    assert add_direction(directions, 1.0, language="en").key() != add_direction(directions, 2.0, language="en").key()


def stream_set(loaded, seed: int = 0) -> DirectionSet:
    """random_set with a per-dimension spread spanning four orders of magnitude (a stream with a few
    massive dimensions)."""
    directions = random_set(loaded, seed)
    spread = torch.logspace(-1, 3, loaded.adapter.hidden_size).repeat(loaded.adapter.num_layers, 1)
    return DirectionSet(directions.directions, directions.languages, "test", source=directions.source,
                        means=directions.means, spread=spread)


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
def test_after_erasure_the_whitened_coordinate_along_d_is_the_centres_and_h_moved_along_d_only(family, make_loaded):
    loaded = make_loaded(family)
    directions = stream_set(loaded)
    before = block_outputs(loaded, erase_direction(directions, "en", layers=[0]))[0]  # layer 0's input is untouched
    plain = block_outputs(loaded)[0]
    d = directions.direction("en")[0].double()
    variance, centre = directions.spread[0].double().square(), directions.means.double().mean(0)[0]
    w = (d / variance) / ((d / variance) @ d)
    assert ((plain.double() - centre) @ w).abs().max() > 1e-3  # there was something to erase
    assert ((before.double() - centre) @ w).abs().max() < 1e-5 * (plain.double() @ w).abs().max().clamp_min(1)
    moved = before.double() - plain.double()  # [batch, seq, H], each row a multiple of d
    coefficient = moved @ d / (d @ d)
    torch.testing.assert_close(moved, coefficient.unsqueeze(-1) * d, atol=1e-4, rtol=1e-4)


def test_erasure_with_unit_variance_and_zero_centre_is_the_orthogonal_ablation(make_loaded):
    loaded = make_loaded("llama")
    directions = random_set(loaded)
    hidden = loaded.adapter.hidden_size
    layers = loaded.adapter.num_layers
    isotropic = DirectionSet(directions.directions, directions.languages, "test", source=directions.source,
                             means=torch.zeros(2, layers, hidden), spread=torch.ones(layers, hidden))
    erased = block_outputs(loaded, erase_direction(isotropic, "fr"))
    ablated = block_outputs(loaded, ablate_direction(directions, "fr"))
    for layer in erased:
        torch.testing.assert_close(erased[layer], ablated[layer], atol=1e-5, rtol=1e-5)


def test_erasure_is_idempotent_and_needs_the_streams_statistics(make_loaded):
    loaded = make_loaded("llama")
    directions = stream_set(loaded)
    erase = erase_direction(directions, "en", layers=[1])
    hidden = torch.randn(3, 5, loaded.adapter.hidden_size, dtype=torch.float64).float() * 50
    once = erase.apply(1, hidden)
    torch.testing.assert_close(erase.apply(1, once), once, atol=1e-3, rtol=1e-5)
    assert erase.num_directions == 1 and erase.kind == "erase"
    control = directions.random_control(seed=1)  # spread, no means: the stream comes from the set it is like
    with pytest.raises(LangNeuronsError, match="spread"):
        erase_direction(control, "en")
    assert erase_direction(control, "en", stream=directions).kind == "erase"
    with pytest.raises(LangNeuronsError, match="zero direction"):
        zero = DirectionSet(torch.zeros_like(directions.directions), directions.languages, "test",
                            means=directions.means, spread=directions.spread)
        erase_direction(zero, "en")
