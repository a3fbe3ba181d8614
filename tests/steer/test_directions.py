"""Direction steering beside neuron steering, on the planted model (tests/steer/conftest.py)."""

import json

import pytest
import torch

from langneurons.errors import LangNeuronsError
from langneurons.evaluate.generation import greedy_generate_naive
from langneurons.intervene import intervene
from langneurons.steer.api import steer, write_steering
from langneurons.steer.directions import (
    RANDOM_DIRECTIONS,
    DirectionCondition,
    DirectionInterventions,
    direction_conditions,
    layer_text,
    parse_layer_choice,
    random_steering_vector,
)
from langneurons.steer.experiment import SteeringOptions, run_steering, steered_generate


@pytest.fixture
def run(planted, planted_set, planted_statistics, planted_directions, fake_identifier, english):
    def run_(neurons=True, **overrides):
        options = SteeringOptions(**{"pairs": ("en>fr",), "actions": ("add=1",), "max_new_tokens": 5,
                                     "batch_size": 4, "direction_layers": ("0", "1"),
                                     "direction_strengths": (0.0, 1.0), **overrides})
        return run_steering(planted, planted_set if neurons else None, options, fake_identifier,
                            planted_statistics if neurons else None, prompts=english, progress=False,
                            directions=planted_directions)

    return run_


def test_condition_names_show_the_unit_and_name_their_random_twin():
    planned = direction_conditions("diffmean", [(6,), (4, 5, 6)], [4.0], ablate=True, random_control=True)
    names = [c.name for c in planned]
    assert names == ["diffmean:ablate@6", "random-dir:ablate@6", "diffmean:add=4@6", "random-dir:add=4@6",
                     "diffmean:ablate+add=4@6", "random-dir:ablate+add=4@6", "diffmean:ablate@4-6",
                     "random-dir:ablate@4-6", "diffmean:add=4@4-6", "random-dir:add=4@4-6",
                     "diffmean:ablate+add=4@4-6", "random-dir:ablate+add=4@4-6"]
    twins = {c.name: c.random_twin for c in planned}
    assert twins["diffmean:add=4@4-6"] == "random-dir:add=4@4-6" and twins["random-dir:add=4@6"] is None
    assert DirectionCondition("diffmean", "both", (3,), 2.0).spec("en", "fr") == "en:ablate@3 + en>fr:add=2@3"
    assert [c.name for c in direction_conditions("d", [(2,)], [1.5], False, False)] == ["d:add=1.5@2"]
    assert (layer_text([7, 5, 6]), layer_text([2, 5]), parse_layer_choice("4-6")) == ("5-7", "2,5", (4, 5, 6))


def test_the_random_twin_has_the_steering_vectors_norm_at_every_layer(planted_directions):
    vector = planted_directions.steering_vector("en", "fr")
    for weighting in ("isotropic", "spread"):
        random = random_steering_vector(planted_directions, "en", "fr", seed=3, weighting=weighting)
        torch.testing.assert_close(torch.linalg.vector_norm(random, dim=-1), torch.linalg.vector_norm(vector, dim=-1))
        assert float((random * vector).sum(-1).abs().max()) < 0.9 * float(vector.norm(dim=-1).max()) ** 2
    # seeded, and each pair has its own vector
    torch.testing.assert_close(random_steering_vector(planted_directions, "en", "fr", 3),
                               random_steering_vector(planted_directions, "en", "fr", 3))
    assert not torch.equal(random_steering_vector(planted_directions, "en", "fr", 3),
                           random_steering_vector(planted_directions, "en", "hi", 3))
    # the interventions the experiment builds: a x the vector at the condition's layers, norms matched
    build = DirectionInterventions(planted_directions, seed=3)
    real = build(DirectionCondition("diffmean", "activate", (0, 1), 2.0), "en", "fr")[0]
    twin = build(DirectionCondition(RANDOM_DIRECTIONS, "activate", (0, 1), 2.0), "en", "fr")[0]
    torch.testing.assert_close(real.vectors[1], 2.0 * vector[1])
    for layer in (0, 1):
        torch.testing.assert_close(twin.vectors[layer].norm(), real.vectors[layer].norm())
    # ablation twins remove the source's direction of the random control (unit rows either way)
    real, twin = (build(DirectionCondition(unit, "deactivate", (1,)), "en", "fr")[0]
                  for unit in ("diffmean", RANDOM_DIRECTIONS))
    assert real.kind == twin.kind == "ablate" and not torch.allclose(real.vectors[1], twin.vectors[1])


def test_strength_zero_gives_exactly_the_baseline_continuations(run):
    result = run(neurons=False)
    by_condition = {}
    for g in result.generations:
        by_condition.setdefault(g["condition"], []).append(g["continuation"])
    assert by_condition["diffmean:add=0@0"] == by_condition["baseline"] == by_condition["random-dir:add=0@1"]
    assert by_condition["diffmean:add=1@1"] != by_condition["baseline"]


def test_directions_steer_beside_neurons_and_each_unit_has_a_dev_chosen_best(run, tmp_path):
    result = run()
    test_rows = {r["condition"]: r for r in result.rows if r["split"] == "test"}
    assert list(test_rows)[:5] == ["baseline", "lape:deactivate", "lape:activate:add=1", "lape:both:add=1",
                                   "random:deactivate"]
    assert list(test_rows)[-8:] == ["diffmean:add=0@0", "random-dir:add=0@0", "diffmean:add=1@0",
                                    "random-dir:add=1@0", "diffmean:add=0@1", "random-dir:add=0@1",
                                    "diffmean:add=1@1", "random-dir:add=1@1"]
    # mean(fr) - mean(en) turns every continuation French at either layer (through the planted neuron at 0)
    for name in ("diffmean:add=1@0", "diffmean:add=1@1"):
        row = test_rows[name]
        assert row["target_rate"] == 100.0 and row["unit"] == "directions" and row["random_twin"] == \
            name.replace("diffmean", "random-dir")
    row = test_rows["diffmean:add=1@1"]
    assert (row["neuron_set"], row["mode"], row["kind"], row["strength"], row["layers"], row["action"]) == \
        ("diffmean", "activate", "add", 1.0, "1", "en>fr:add=1@1")
    assert test_rows["random-dir:add=1@1"]["target_rate"] < 100.0
    assert test_rows["lape:both:add=1"]["random_twin"] == "random:both:add=1"
    assert test_rows["lape:both:add=1"]["unit"] == "neurons" and test_rows["baseline"]["unit"] is None
    assert test_rows["random:both:add=1"]["random_twin"] is None
    bests = result.best_conditions()
    assert bests == {"neurons": "lape:activate:add=1", "directions": "diffmean:add=1@0"}
    assert result.meta["direction_set"] == "diffmean"
    assert result.meta["steering_vector_norms"]["en>fr"] == pytest.approx([6.0, (100 + 36) ** 0.5])
    write_steering(result, tmp_path)
    data = json.loads((tmp_path / "steering.json").read_text())
    assert data["best_conditions"] == bests and data["best_condition"] == "lape:activate:add=1"
    header = (tmp_path / "steering.csv").read_text().splitlines()[0].split(",")
    assert {"unit", "layers", "random_twin"} <= set(header)
    assert (tmp_path / "steering_heatmap_directions.svg").is_file()
    examples = json.loads((tmp_path / "examples.json").read_text())
    assert examples[0]["direction_condition"] == "diffmean:add=1@0" and examples[0]["direction_steered_language"] == "fr"


def test_source_ablation_conditions(run):
    result = run(neurons=False, direction_layers=("1",), direction_strengths=(1.0,), direction_ablate=True)
    names = [r["condition"] for r in result.rows if r["split"] == "test"]
    assert names == ["baseline", "diffmean:ablate@1", "random-dir:ablate@1", "diffmean:add=1@1", "random-dir:add=1@1",
                     "diffmean:ablate+add=1@1", "random-dir:ablate+add=1@1"]
    rows = {r["condition"]: r for r in result.rows if r["split"] == "test"}
    # the model's English text has no component along en's direction worth removing: still English
    assert rows["diffmean:ablate@1"]["source_rate"] == 100.0
    assert rows["diffmean:ablate+add=1@1"]["target_rate"] == 100.0
    assert rows["diffmean:ablate+add=1@1"]["action"] == "en:ablate@1 + en>fr:add=1@1"


@pytest.mark.parametrize("unit", ["diffmean", RANDOM_DIRECTIONS])
def test_kv_cached_steering_equals_uncached_for_a_direction_condition(planted, planted_directions, unit):
    from langneurons.evaluate.generation import StopRule

    prompts = [list(planted.tokenizer(text)["input_ids"]) for text in ("w100 w101 w102", "w140 w141 w142 w143 w150")]
    interventions = DirectionInterventions(planted_directions, seed=1)(
        DirectionCondition(unit, "both", (0, 1), 0.5), "en", "fr")
    stop = StopRule(planted.tokenizer, {2}, stop_at_newline=False)
    cached = steered_generate(planted, prompts, interventions, 0, stop, max_new_tokens=6, batch_size=2)
    with intervene(planted, interventions[0]), intervene(planted, interventions[1]), torch.no_grad():
        uncached = greedy_generate_naive(planted.model, prompts, stop, max_new_tokens=6)
    assert cached == uncached
    plain = steered_generate(planted, prompts, [], 0, stop, max_new_tokens=6, batch_size=2)
    assert unit == RANDOM_DIRECTIONS or cached != plain


def test_bad_direction_requests_are_one_line_errors(planted, planted_set, planted_directions, fake_identifier,
                                                    english):
    with pytest.raises(LangNeuronsError, match="listed twice"):
        SteeringOptions(direction_layers=("4-6", "4,5,6"))
    with pytest.raises(LangNeuronsError, match="finite"):
        SteeringOptions(direction_layers=("1",), direction_strengths=(float("nan"),))
    with pytest.raises(LangNeuronsError, match="direction_weighting"):
        SteeringOptions(direction_weighting="gauss")
    with pytest.raises(LangNeuronsError, match="layers"):
        SteeringOptions(direction_layers=("x",))

    def run_(options, directions=planted_directions, neurons=None):
        run_steering(planted, neurons, options, fake_identifier, prompts=english, progress=False,
                     directions=directions)

    with pytest.raises(LangNeuronsError, match="direction_layers"):
        run_(SteeringOptions(actions=()))
    with pytest.raises(LangNeuronsError, match="outside"):
        run_(SteeringOptions(direction_layers=("1-2",)))
    with pytest.raises(LangNeuronsError, match="neuron set .* or a direction set"):
        run_(SteeringOptions(direction_layers=("1",)), directions=None)
    from langneurons.directions.direction_set import DirectionSet

    two = planted_directions
    two = DirectionSet(two.directions[:2], ["en", "fr"], "diffmean", {}, two.source, means=two.means[:2])
    with pytest.raises(LangNeuronsError, match="no direction for 'hi'"):
        run_(SteeringOptions(pairs=("en>hi",), direction_layers=("1",)), directions=two)
    with pytest.raises(LangNeuronsError, match="no means"):
        run_(SteeringOptions(direction_layers=("1",)), directions=two.random_control())


def test_the_stage_api_runs_directions_without_neurons(planted, planted_directions, fake_identifier, english, tmp_path):
    path = planted_directions.save(tmp_path / "diffmean.safetensors")
    options = SteeringOptions(actions=("add=1",), direction_layers=("1",), direction_strengths=(1.0,),
                              max_new_tokens=3)
    result, files = steer(planted, None, options, tmp_path / "out", identifier=fake_identifier, progress=False,
                          directions_path=path)
    assert {r["condition"] for r in result.rows} == {"baseline", "diffmean:add=1@1", "random-dir:add=1@1"}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert set(manifest["inputs"]) == {"direction_set"}
    assert json.loads((tmp_path / "out" / "steering.json").read_text())["best_condition"] == "diffmean:add=1@1"


def test_neuron_modes_choose_the_neuron_conditions():
    from langneurons.steer.experiment import conditions

    names = lambda **kw: [c.name for c in conditions(SteeringOptions(actions=("add=2", "stat=p99"), **kw), ["lape"])]
    assert names(neuron_modes=("both",)) == ["baseline", "lape:both:add=2", "lape:both:stat=p99"]
    assert names() == ["baseline", "lape:deactivate", "lape:activate:add=2", "lape:both:add=2",
                       "lape:activate:stat=p99", "lape:both:stat=p99"]
    assert names(deactivate=False, neuron_modes=("activate", "both")) == ["baseline", "lape:activate:add=2",
                                                                          "lape:activate:stat=p99"]
    with pytest.raises(LangNeuronsError, match="neuron_modes"):
        SteeringOptions(neuron_modes=("both", "zero"))
