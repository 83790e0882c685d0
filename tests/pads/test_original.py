"""The original's command line: every PADS flag reaches a PADS argument with the original's default."""
from __future__ import annotations

import inspect

import pytest

from rankdml.pads import PADS, original

from .test_callback import VAL


def test_constructor_defaults_are_the_originals():
    params = inspect.signature(PADS).parameters
    expected = original.pads_arguments({})  # what the original does with no flag given
    for name, value in expected.items():
        default = params[name].default
        assert (tuple(default) if isinstance(default, (list, tuple)) else default) == value, name
    # hand-checked against PADS_utilities.include_pads_args / main.py
    assert expected["sample_every"] == 30 and expected["metric_history"] == 10 and expected["old_policy_update"] == 3
    assert expected["action_values"] == (0.5, 1.0, 1.5) and expected["reward_type"] == 2 and expected["use_a2c"]
    assert expected["state_metrics"] == ("recall", "nmi", "dists") and expected["running_averages"] == (2, 8, 16, 32)


def test_every_policy_flag_is_mapped():
    assert set(original.FLAGS) | {"policy_no_self_reg"} == set(original.DEFAULTS)
    params = inspect.signature(PADS).parameters
    assert all(arg in params for arg in original.FLAGS.values())


def test_sample_runs_build_the_documented_state():
    for name, run in original.SAMPLE_RUNS.items():
        kwargs = original.pads_arguments(run)
        if name == "sop":
            kwargs["ks"] = (1, 2, 4, 8)  # the toy validation set has 18 items
        pads = PADS(VAL, progress=False, **kwargs)
        assert pads.state_maker.size == 198
        assert tuple(pads.policy.action_values.tolist()) == (0.8, 1.0, 1.25) and pads.trainer.old_policy_update == 5
    assert original.pads_arguments(original.SAMPLE_RUNS["cub200"])["reward_type"] == 1


def test_flags_taken_at_their_word_and_errors():
    as_run = original.pads_arguments({"policy_merge_oobs": False, "policy_include_pos": False})
    assert as_run["merge_out_of_range"] and as_run["same_class_negatives"]  # forced, as the original does
    literal = original.pads_arguments({"policy_merge_oobs": False, "policy_include_pos": False},
                                      as_the_original_runs=False)
    assert not literal["merge_out_of_range"] and not literal["same_class_negatives"]
    assert not original.pads_arguments({"policy_no_self_reg": True})["anchor_as_positive"]
    assert not original.pads_arguments({"policy_dont_use_a2c": True})["use_a2c"]
    with pytest.raises(ValueError, match="unknown flags"):
        original.pads_arguments({"policy_samplefreq": 30})
