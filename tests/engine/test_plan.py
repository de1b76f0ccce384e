import json

import pytest

from studio.engine import LayerSpec, Plan


@pytest.mark.parametrize(
    "spec",
    [
        LayerSpec(),
        LayerSpec(bits=16),
        LayerSpec(bits=4, granularity="tensor", symmetric=False, clip="mse"),
        LayerSpec(bits=3, prune=0.5, prune_method="structured"),
        LayerSpec(bits=5, prune=0.5, prune_method="2:4", cluster=True),
    ],
)
def test_layer_spec_json_round_trip(spec):
    assert LayerSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_plan_json_round_trip_and_equality():
    plan = Plan.uniform(bits=8).with_layer("features.0", bits=4, prune=0.5).with_layer("fc", bits=None)
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert hash(again) == hash(plan)
    assert again.spec_for("features.0") == LayerSpec(bits=4, prune=0.5)
    assert again.spec_for("fc").bits is None
    assert again.spec_for("anything-else") == LayerSpec(bits=8)


def test_plan_defaults_and_with_layer_returns_new_plan():
    empty = Plan()
    assert empty.default.bits is None and empty.layers == {}
    plan = empty.with_layer("a", bits=4)
    assert empty.layers == {} and plan.layers == {"a": LayerSpec(bits=4)}
    # setting a layer back to the default removes the override
    assert plan.with_layer("a", bits=None) == empty
    # override order does not matter
    assert Plan().with_layer("a", bits=4).with_layer("b", bits=2) == Plan().with_layer("b", bits=2).with_layer("a", bits=4)


def test_bits_32_means_float():
    assert LayerSpec(bits=32) == LayerSpec(bits=None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bits": 1}, "bits=1 is out of range"),
        ({"bits": 9}, "bits=9 is out of range"),
        ({"bits": 12}, "bits=12 is out of range"),
        ({"bits": "8"}, "bits must be an integer"),
        ({"prune": 1.0}, "prune=1.0 is out of range"),
        ({"prune": -0.1}, "out of range"),
        ({"granularity": "row"}, "granularity must be one of"),
        ({"prune_method": "random"}, "prune_method must be"),
        ({"prune_method": "4:2"}, "prune_method must be"),
        ({"bits": 16, "cluster": True}, "cluster=True needs bits"),
    ],
)
def test_invalid_specs_raise_value_error_that_says_what_to_do(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LayerSpec(**kwargs)


def test_from_json_rejects_bad_input_clearly():
    with pytest.raises(ValueError, match="not valid JSON"):
        Plan.from_json("{nope")
    with pytest.raises(ValueError, match="unknown plan key"):
        Plan.from_dict({"layerz": {}})
    with pytest.raises(ValueError, match="unknown layer setting"):
        Plan.from_dict({"default": {"bitz": 4}})
    with pytest.raises(ValueError, match="bits=77"):
        Plan.from_dict({"layers": {"fc": {"bits": 77}}})


def test_labels_are_readable():
    assert LayerSpec(bits=4, prune=0.5).label() == "int4 ch sym, 50% pruned"
    assert LayerSpec(bits=16).label() == "float16"
    assert LayerSpec(bits=3, cluster=True).label() == "3-bit k-means"


def test_with_all_changes_default_and_overrides():
    plan = Plan.uniform(8).with_layer("a", bits=4).with_layer("b", prune=0.5)
    everything = plan.with_all(prune=0.25)
    assert everything.spec_for("a") == LayerSpec(bits=4, prune=0.25)
    assert everything.spec_for("b") == LayerSpec(bits=8, prune=0.25)  # now equal to the default
    assert everything.layers == {"a": LayerSpec(bits=4, prune=0.25)}
    assert plan.with_all(bits=2).layers == {"b": LayerSpec(bits=2, prune=0.5)}
