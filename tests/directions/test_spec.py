"""Direction intervention specs: the string and dict forms mean the same, resolve to the
intervention the builders make, and bad specs are one-line errors."""

import pytest
import torch

from langneurons.directions.direction_set import DirectionSet
from langneurons.directions.interventions import ablate_direction, ablate_subspace, add_direction
from langneurons.directions.spec import DirectionSpec, parse_direction_spec, resolve_direction_spec
from langneurons.errors import LangNeuronsError


def test_string_and_dict_forms_agree():
    assert parse_direction_spec("runs/d.safetensors:hi:ablate") == DirectionSpec("runs/d.safetensors", "hi", "ablate")
    parsed = parse_direction_spec("C:/x/d.safetensors:en>fr:add=4@4-5,1:prompt")
    assert parsed == DirectionSpec("C:/x/d.safetensors", "en>fr", "add", 4.0, (1, 4, 5), "prompt")
    assert parse_direction_spec(parsed.to_string()) == parsed
    assert parse_direction_spec({"directions": "C:/x/d.safetensors", "unit": "en>fr", "kind": "add", "value": 4,
                                 "layers": [5, 4, 1], "positions": "prompt"}) == parsed
    assert parse_direction_spec("d.safetensors:subspace:ablate@2").layers == (2,)


@pytest.mark.parametrize(("spec", "message"), [
    ("d.safetensors:hi", "DIRECTIONS:UNIT:ACTION"),
    ("d.safetensors:hi:zero", "unknown direction action"),
    ("d.safetensors:hi:ablate=2", "takes no value"),
    ("d.safetensors:hi:add", "needs a strength"),
    ("d.safetensors:hi:add=inf", "finite"),
    ("d.safetensors:en>fr:ablate", "added"),
    ("d.safetensors:subspace:add=2", "only be ablated"),
    ("d.safetensors:xx:ablate", "xx"),
    ("d.safetensors:hi:ablate@5-2", "bad layer range"),
    ({"directions": "d", "unit": "hi"}, "missing"),
    ({"directions": "d", "unit": "hi", "kind": "ablate", "strength": 1}, "unknown direction intervention keys"),
])
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(LangNeuronsError, match=message):
        parse_direction_spec(spec)


def test_resolving_gives_the_builders_interventions(make_loaded, tmp_path):
    loaded = make_loaded("llama")
    generator = torch.Generator().manual_seed(0)
    directions = DirectionSet(torch.randn(2, 2, 32, generator=generator), ["en", "fr"], "diffmean",
                              source={"weights_fingerprint": loaded.info.weights_fingerprint},
                              means=torch.randn(2, 2, 32, generator=generator),
                              subspace=torch.linalg.qr(torch.randn(2, 32, 1, generator=generator)).Q.transpose(1, 2))
    path = directions.save(tmp_path / "d.safetensors")
    assert resolve_direction_spec(f"{path}:fr:ablate@1", loaded).key() == ablate_direction(directions, "fr", [1]).key()
    assert resolve_direction_spec(f"{path}:en>fr:add=3", loaded).key() == \
        add_direction(directions, 3.0, source="en", target="fr").key()
    assert resolve_direction_spec(f"{path}:en:add=-1@0", loaded).key() == \
        add_direction(directions, -1.0, language="en", layers=[0]).key()
    assert resolve_direction_spec(f"{path}:subspace:ablate", loaded).key() == ablate_subspace(directions).key()
    with pytest.raises(LangNeuronsError, match="not in this direction set"):
        resolve_direction_spec(f"{path}:hi:ablate", loaded)
