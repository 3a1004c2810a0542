import dataclasses

import pytest
import yaml

from sie3d.config import Config, ConfigError, config_from_dict, load_config, parse_override
from sie3d.evaluation.ablations import EXPRESSION_PARTS, TABLE2_ABLATIONS


def test_defaults_are_the_reference_settings():
    c = Config()
    assert c.guidance.t_range == [0.02, 0.5]
    assert (c.guidance.delta_t, c.guidance.xs_delta_t, c.guidance.xs_inv_steps) == (50, 50, 20)
    assert c.guidance.guidance_scale == 1.25 and c.guidance.weight == 0.1
    assert c.conditioning.view_blend == 0.9 and c.conditioning.gamma_expr == 0.2
    assert c.loss.lambda_emotion == 0.1 and c.loss.lambda_pos == 1e8


def test_presets_load_and_differ(repo_root):
    paper = load_config(repo_root / "params/paper.yaml")
    quick = load_config(repo_root / "params/quick.yaml")
    assert paper.preset == "paper" and quick.preset == "quick"
    assert paper.render.resolution == 512 and paper.train.batch_size == 4
    assert paper.train.iterations == 5000 and paper.loss.lambda_ref == 0.0
    assert paper.loss.lambda_pos == 1e8  # YAML "1.0e8" (a string to YAML 1.1) is read as a number
    assert quick.models.prior == "tiny" and quick.run.device == "cpu"
    assert paper.params_hash() != quick.params_hash()


def test_every_ablation_applies_onto_both_presets(repo_root):
    """Each delta changes both presets, except the offline expression's decomposition on the paper preset,
    which has no FACS prototype floor to remove (its expression comes from the text-conditioned prior)."""
    offline_only = set(EXPRESSION_PARTS) - set(TABLE2_ABLATIONS)
    assert offline_only == {"no_expression_prior"}
    for delta in sorted((repo_root / "params/ablations").glob("*.yaml")):
        for preset in ("quick", "paper"):
            base = load_config(repo_root / f"params/{preset}.yaml")
            merged = load_config(repo_root / f"params/{preset}.yaml", delta)
            if preset == "paper" and delta.stem in offline_only:
                assert base.loss.lambda_expression_prior == 0 and merged.params_hash() == base.params_hash()
            else:
                assert merged.params_hash() != base.params_hash(), (preset, delta.name)


def test_round_trip_through_yaml(tmp_path, repo_root):
    config = load_config(repo_root / "params/quick.yaml", overrides=["guidance.delta_t=40"])
    path = tmp_path / "c.yaml"
    path.write_text(config.to_yaml())
    again = load_config(path)
    assert again == config
    assert config_from_dict(yaml.safe_load(config.to_yaml())) == config


def test_overrides_parse_yaml_values():
    c = load_config(overrides=["guidance.delta_t=40", "guidance.t_range=[0.1, 0.3]",
                               "run.offline=false", "conditioning.accessory=wearing glasses",
                               "optim.lr_opacity=1e-2"])
    assert c.guidance.delta_t == 40 and c.guidance.t_range == [0.1, 0.3]
    assert c.run.offline is False and c.conditioning.accessory == "wearing glasses"
    assert c.optim.lr_opacity == pytest.approx(0.01)
    assert parse_override("a.b.c=3") == {"a": {"b": {"c": 3}}}


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config(overrides=["guidance.guidance_scale=2"]).guidance.guidance_scale == 2.0
    with pytest.raises(ConfigError, match=r"guidance\.delta_t: expected an integer"):
        load_config(overrides=["guidance.delta_t=2.5"])


@pytest.mark.parametrize("override, message", [
    ("guidance.delta=3", r"unknown params key 'guidance\.delta'; did you mean 'guidance\.delta_t'"),
    ("guidanc.delta_t=3", r"unknown params key 'guidanc'; did you mean 'guidance'"),
    ("run.seed=abc", r"run\.seed: expected an integer"),
    ("run.offline=3", r"run\.offline: expected true or false"),
    ("guidance.t_range=0.5", r"guidance\.t_range: expected a list"),
    ("novalue", r"must look like section\.key=value"),
])
def test_bad_keys_and_types_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_unknown_key_in_file_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("guidance:\n  delta_tt: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'guidance.delta_t'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="params file not found"):
        load_config(tmp_path / "missing.yaml")


def test_sections_are_dataclasses_all_the_way_down():
    for f in dataclasses.fields(Config):
        value = getattr(Config(), f.name)
        assert f.name == "preset" or dataclasses.is_dataclass(value)


def test_person_fit_is_switched_by_its_own_flags(repo_root):
    flags = ("person_shape", "person_colours", "expression_free_appearance")
    paper, quick = (load_config(repo_root / f"params/{p}.yaml").models for p in ("paper", "quick"))
    assert not any(getattr(Config().models, f) or getattr(paper, f) for f in flags)  # the paper has no person fit
    assert all(getattr(quick, f) for f in flags)
