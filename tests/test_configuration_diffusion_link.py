import pytest

from diffusion_link import DiffusionLinkConfig


def test_defaults_follow_the_paper():
    config = DiffusionLinkConfig()
    assert config.embedding_dim == 512 and config.hidden_size == 1024 and config.num_blocks == 3
    assert config.num_train_timesteps == 1000 and config.strength == 0.1 and config.num_inference_steps == 5
    assert config.topology_loss_weight == 1.0 and config.ema_decay == 0.995 and config.inference_weights == "ema"
    assert config.max_train_timestep == config.num_train_timesteps


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("embedding_dim", 0, "embedding_dim"),
        ("hidden_size", 2.5, "hidden_size"),
        ("num_blocks", True, "num_blocks"),
        ("timestep_embedding_dim", 15, "even"),
        ("dropout", 1.0, "dropout"),
        ("beta_schedule", "cosine", "beta_schedule"),
        ("beta_start", 0.5, "beta_start"),
        ("max_train_timestep", 1001, "max_train_timestep"),
        ("strength", 0.0, "strength"),
        ("strength", 1.5, "strength"),
        ("num_inference_steps", 0, "num_inference_steps"),
        ("topology_loss_weight", -1.0, "topology_loss_weight"),
        ("ema_decay", 1.0, "ema_decay"),
        ("inference_weights", "best", "inference_weights"),
        ("input_normalization", "l1", "input_normalization"),
        ("standardization", "global", "standardization"),
        ("link_start", "random", "link_start"),
        ("x0_parameterization", "eps", "x0_parameterization"),
    ],
)
def test_invalid_fields_raise_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        DiffusionLinkConfig(**{field: value})


def test_round_trip_through_dict():
    config = DiffusionLinkConfig(embedding_dim=12, hidden_size=37, link_start="inserted", strength=0.6)
    again = DiffusionLinkConfig.from_dict(config.to_dict())
    assert again.embedding_dim == 12 and again.hidden_size == 37 and again.link_start == "inserted"
    assert again.strength == 0.6
