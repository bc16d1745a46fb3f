import pytest
import torch

from brainuad.config import ModelConfig
from brainuad.models import losses
from brainuad.models.registry import MODELS, build_discriminator, build_model, model_defaults

TINY = {"image_size": 64, "width": 8, "max_width": 32}
EXPECTED_Z = {"dae": "512", "sae8": "2x2x64", "sae16": "4x4x64", "saegan": "4x4x64",
              "dvae": "512", "svae": "4x4x64", "anovaegan": "4x4x64", "threshold": "-"}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_reconstructs_right_shape_and_range(name):
    cfg = ModelConfig(**model_defaults(name), **TINY)
    model = build_model(cfg)
    x = torch.rand(3, 1, 64, 64)
    x_hat = model.reconstruct(x)
    assert x_hat.shape == x.shape
    assert x_hat.min() >= 0 and x_hat.max() <= 1
    assert cfg.z_description == EXPECTED_Z[name]
    assert (build_discriminator(cfg) is not None) == cfg.adversarial


def test_bottleneck_follows_image_size():
    assert ModelConfig(image_size=256).z_description == "16x16x64"
    assert ModelConfig(image_size=128).z_description == "8x8x64"
    assert ModelConfig(image_size=256, levels=5).z_description == "8x8x64"


def test_vae_samples_only_in_training():
    model = build_model(ModelConfig(**model_defaults("svae"), **TINY))
    x = torch.rand(2, 1, 64, 64)
    model.train()
    _, mu, logvar, z = model(x)
    assert logvar is not None and not torch.equal(z, mu)
    model.eval()
    assert torch.equal(model.reconstruct(x), model.reconstruct(x))


def test_loss_terms_and_signs():
    x = torch.rand(4, 1, 8, 8)
    assert losses.l1(x, x) == 0 and losses.l1(x, x + 0.1) == pytest.approx(0.1, abs=1e-6)
    zeros = torch.zeros(4, 16)
    assert losses.kl_normal(zeros, zeros) == 0
    assert losses.kl_normal(zeros + 1, zeros) > 0 and losses.kl_normal(zeros, zeros + 1) > 0
    confident_real, confident_fake = torch.full((4,), 8.0), torch.full((4,), -8.0)
    # the generator's term is small when D calls reconstructions real, large when it spots them
    assert losses.generator_adversarial(confident_real) < 0.01
    assert losses.generator_adversarial(confident_fake) > 5
    # the discriminator's loss is small when it is right on both, large when wrong on both
    assert losses.discriminator(confident_real, confident_fake) < 0.01
    assert losses.discriminator(confident_fake, confident_real) > 10


def test_every_shipped_config_loads():
    from pathlib import Path

    from brainuad.benchmark import read_benchmark
    from brainuad.config import from_dict, merge
    from brainuad.models.registry import model_defaults, run_config

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
    assert len(configs) >= 2 * (len(MODELS)) + 1
    for path in configs:
        if path.parent.name == "experiments":  # benchmarks: a manifest, models, shared settings
            bench = read_benchmark(path)
            assert bench.manifest.is_file(), path
            for name in bench.models:
                from_dict(merge({"model": model_defaults(name)}, bench.run), str(path))
            continue
        cfg = run_config(None, str(path))
        assert cfg.model.name in MODELS, path
        if path.parent.name == "paper":
            assert (cfg.model.image_size, cfg.train.epochs, cfg.train.batch_size) == (256, 190, 8)
            assert cfg.model.z_description == EXPECTED_Z_PAPER[cfg.model.name]


EXPECTED_Z_PAPER = {"dae": "512", "sae8": "8x8x64", "sae16": "16x16x64", "saegan": "16x16x64",
                    "dvae": "512", "svae": "16x16x64", "anovaegan": "16x16x64", "threshold": "-"}
