import pytest
import torch

from brainuad.config import ModelConfig, RunConfig
from brainuad.models.common import losses
from brainuad.models.registry import PRESETS, build_network, kind_of, model_defaults

TINY = {"image_size": 64, "width": 8, "max_width": 32}
EXPECTED_Z = {"dae": "512", "sae8": "2x2x64", "sae16": "4x4x64", "saegan": "4x4x64",
              "dvae": "512", "svae": "4x4x64", "anovaegan": "4x4x64", "anogan": "64",
              "denoising": "U-Net", "threshold": "-", "normative": "-"}
NETWORKS = [name for name in PRESETS if kind_of(name).network is not None]


def test_every_kind_names_modules_that_exist():
    """A kind names its scorer, network and Lightning module as "module:name" strings, which
    no import checker follows: each must resolve to a class or function."""
    from brainuad.models.kind import _imported
    from brainuad.models.registry import KINDS

    for kind in KINDS.values():
        for where in (kind.scorer, kind.network, kind.lightning):
            assert where is None or callable(_imported(where)), (kind.name, where)


def test_kinds_without_a_network_build_none():
    for name in ("threshold", "normative"):
        cfg = ModelConfig(**model_defaults(name))
        assert build_network(cfg) is None
        assert kind_of(name).bottleneck(cfg) == EXPECTED_Z[name]


@pytest.mark.parametrize("name", NETWORKS)
def test_every_model_reconstructs_right_shape_and_range(name):
    cfg = ModelConfig(**model_defaults(name), **TINY, search_steps=10)  # AnoGAN's search
    model = build_network(cfg).eval()
    x = torch.rand(3, 1, 64, 64)
    with torch.inference_mode():  # as detect calls it
        x_hat = model.reconstruct(x)
    assert x_hat.shape == x.shape
    assert x_hat.min() >= 0 and x_hat.max() <= 1
    assert kind_of(name).bottleneck(cfg) == EXPECTED_Z[name]
    # AnoGAN's discriminator lives in the model (its latent search needs it)
    module = kind_of(name).module()(RunConfig(model=cfg).to_dict())
    assert (module.discriminator is not None) == (cfg.adversarial and name != "anogan")


def test_anogan_latent_search_lowers_its_loss_slice_by_slice():
    cfg = ModelConfig(**model_defaults("anogan"), **TINY, search_steps=30)
    torch.manual_seed(0)
    model = build_network(cfg).eval()
    x = model.sample(torch.randn(4, cfg.latent_dim)).detach()  # slices it can reach
    with torch.inference_mode():
        x_hat = model.reconstruct(x)
    first, last = model.search_losses
    assert last < 0.7 * first
    # batched search = per-slice search: each slice's code gets only its own gradient
    with torch.inference_mode():
        alone = model.reconstruct(x[1:2])
    torch.testing.assert_close(alone, x_hat[1:2], atol=1e-4, rtol=0)
    assert not any(p.grad is not None for p in model.parameters())  # weights untouched


def test_anogan_search_converges_under_bf16_detection():
    """detect's bf16 autocast once froze the search (autocast cached z's first cast, so every
    step saw z = 0): under bf16 the search must move, end no worse than the fp32 search (bf16
    rounding differs between CPUs: on some the bf16 search ends a few % lower, on others a few
    % higher), and reconstruct near it."""
    import numpy as np

    from brainuad.models.common.residual import reconstruct

    cfg = ModelConfig(**model_defaults("anogan"), **TINY, search_steps=30)
    torch.manual_seed(0)
    model = build_network(cfg)
    # batch-norm statistics of the generator's own samples: outputs with a trained net's
    # contrast (eval-mode random weights give ~0.5 +- 1e-4, below bf16's resolution)
    for norm in model.modules():
        if isinstance(norm, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            norm.momentum = None
    with torch.no_grad():
        model.discriminator.features(model.sample(torch.randn(64, cfg.latent_dim)))
    model.eval()
    x = model.sample(torch.randn(4, cfg.latent_dim)).detach()[:, 0].numpy()
    fp32 = reconstruct(model, x, 4, "32")
    fp32_losses = model.search_losses
    bf16 = reconstruct(model, x, 4, "bf16")
    first, last = model.search_losses
    start = model.sample(torch.zeros(4, cfg.latent_dim)).detach()[:, 0].numpy()  # z = 0
    assert last < 0.7 * first and last < 1.05 * fp32_losses[1]
    assert np.abs(bf16 - fp32).mean() < 0.5 * np.abs(start - fp32).mean()  # frozen: 1.0


def test_bottleneck_follows_image_size():
    assert ModelConfig(image_size=256).z_description == "16x16x64"
    assert ModelConfig(image_size=128).z_description == "8x8x64"
    assert ModelConfig(image_size=256, levels=5).z_description == "8x8x64"


def test_vae_samples_only_in_training():
    model = build_network(ModelConfig(**model_defaults("svae"), **TINY))
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

    from brainuad.commands.benchmark import read_benchmark
    from brainuad.config import from_dict, merge
    from brainuad.models.registry import model_defaults, run_config

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
    assert len(configs) >= 2 * (len(PRESETS) - 1) + 1
    for path in configs:
        if path.parent.name in ("experiments", "models"):  # benchmarks and released models
            bench = read_benchmark(path)
            assert bench.manifest is None or bench.manifest.is_file(), path
            for recipe in bench.recipes:
                from_dict(merge(merge({"model": model_defaults(recipe.model)}, bench.run),
                                recipe.run), str(path))
            continue
        cfg = run_config(None, str(path))
        assert cfg.model.name in PRESETS, path
        if path.parent.name == "paper":
            epochs = 150 if cfg.model.name == "anogan" else 190
            assert (cfg.model.image_size, cfg.train.epochs) == (256, epochs)
            assert cfg.train.batch_size == 8
            assert kind_of(cfg.model.name).bottleneck(cfg.model) == \
                EXPECTED_Z_PAPER[cfg.model.name]
    names = {p.parent.name + "/" + p.stem for p in configs}
    assert {f"{kind}/{m}" for kind in ("paper", "cpu") for m in PAPER} <= names


EXPECTED_Z_PAPER = {"dae": "512", "sae8": "8x8x64", "sae16": "16x16x64", "saegan": "16x16x64",
                    "dvae": "512", "svae": "16x16x64", "anovaegan": "16x16x64", "anogan": "64",
                    "denoising": "U-Net", "threshold": "-"}
#: The presets with a config of the paper's setting (configs/paper, configs/cpu).
PAPER = list(EXPECTED_Z_PAPER)


@pytest.mark.parametrize("name", PAPER)
def test_a_model_name_alone_is_the_paper_config(name):
    from pathlib import Path

    from brainuad.models.registry import run_config

    paper = Path(__file__).resolve().parents[1] / "configs" / "paper" / f"{name}.yaml"
    assert run_config(name).to_dict() == run_config(None, str(paper)).to_dict()


@pytest.mark.parametrize("name", ["svae", "dae", "anogan"])
def test_batchnorm_folding_keeps_the_outputs(name):
    from brainuad.models.common.blocks import fuse_batchnorm

    torch.manual_seed(0)
    model = build_network(ModelConfig(**model_defaults(name), **TINY, search_steps=3))
    for module in model.modules():  # non-trivial running statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model.eval()
    fused = fuse_batchnorm(model)

    def norms(m):
        return sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())

    # every norm after a convolution is folded; dense models keep the one after their Linear
    assert norms(fused) == (0 if name == "svae" else 1) < norms(model)
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(fused.reconstruct(x), model.reconstruct(x), atol=1e-5, rtol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy


def test_bf16_reconstruction_is_close_to_fp32():
    from brainuad.models.common.residual import reconstruct

    torch.manual_seed(0)
    model = build_network(ModelConfig(**model_defaults("svae"), **TINY)).eval()
    images = torch.rand(4, 64, 64).numpy()
    full, half = reconstruct(model, images, 2), reconstruct(model, images, 2, "bf16")
    assert half.dtype == full.dtype and abs(half - full).max() < 0.02


def test_demo_yaml_is_what_the_demo_trains():
    """configs/demo.yaml (for users) and the demo's own settings must not drift apart."""
    from pathlib import Path

    from brainuad.commands.demo import demo_config
    from brainuad.models.registry import run_config

    path = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    assert run_config(None, str(path)).to_dict() == demo_config("anovaegan").to_dict()


def test_coarse_noise_is_smooth_inside_the_brain_only():
    from brainuad.models.autoencoder.noise import coarse_noise

    torch.manual_seed(0)
    x = torch.zeros(4, 1, 64, 64)
    x[:, :, 16:48, 16:48] = 0.5
    noisy = coarse_noise(x, 0.2, 8)
    noise = noisy - x
    assert noise[x == 0].abs().max() == 0  # nothing outside the brain
    inside = noise[:, 0, 16:48, 16:48]
    assert 0.05 < float(inside.std()) < 0.3
    # coarse: neighbours nearly equal (an 8 x 8 grid on 64 px; white noise: 1.13 sd)
    assert float((inside[:, 1:] - inside[:, :-1]).abs().mean()) < 0.3 * float(inside.std())


def test_trimmed_loss_ignores_the_largest_brain_errors():
    x = torch.full((1, 1, 10, 10), 0.5)
    x_hat = x.clone()
    x_hat[0, 0, 0, 0] = 1.5  # one outlier (a lesion the model should not learn)
    assert losses.reconstruction(x, x_hat, "l1", trim=0.05) == 0
    assert losses.reconstruction(x, x_hat, "l1") == pytest.approx(0.01)
    assert losses.reconstruction(x, x_hat, "l2") == pytest.approx(0.01)


def test_unet_skips_carry_fine_detail():
    """With skips a one-pixel change reaches the output near where it was made, through the
    finest level, even when the bottleneck path is cut."""
    torch.manual_seed(0)
    model = build_network(ModelConfig(**model_defaults("denoising"), **TINY)).eval()
    x = torch.rand(1, 1, 64, 64)
    y = x.clone()
    y[0, 0, 30, 30] += 0.5
    with torch.no_grad():
        model.from_latent[0].weight.zero_()
        model.from_latent[0].bias.zero_()
        change = (model.reconstruct(y) - model.reconstruct(x)).abs()[0, 0]
    assert change[26:35, 26:35].sum() > 0.5 * change.sum() > 0


def test_the_shipped_model_detects_with_the_settings_it_was_chosen_with():
    """The bundled flair-ms's detection settings are those of the variant its recipe chose its
    operating point in (configs/models/flair-ms.yaml), and that operating point is shipped."""
    import json
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    recipe = yaml.safe_load((repo / "configs" / "models" / "flair-ms.yaml").read_text())
    shipped = repo / "src" / "brainuad" / "weights" / "flair-ms"
    detect = yaml.safe_load((shipped / "config.yaml").read_text())["detect"]
    for key, value in recipe["variants"]["model"].items():
        assert detect[key] == value, key
    from brainuad.detection.detector import Detector

    detector = Detector.load("flair-ms", accelerator="cpu")
    point = detector.operating_point(detector.settings())
    assert point is not None and detector.threshold(detector.settings()) == point["threshold"]
    assert json.loads((shipped / "threshold.json").read_text())["operating_points"]


def test_every_kinds_scores_are_registered_scores():
    """A score is one entry of config.SCORES (its range, whether it needs normative maps); a
    kind names which it computes."""
    from brainuad.config import SCORES
    from brainuad.models.registry import KINDS

    for kind in KINDS.values():
        assert set(kind.scores) <= set(SCORES), kind.name
    assert {s for k in KINDS.values() for s in k.scores} == set(SCORES)
