import pytest
import torch

from rankdml.models import MODELS, make_model


@pytest.mark.parametrize("name", list(MODELS))
def test_models_embed_to_unit_vectors(name):
    size = 32 if name == "small_cnn" else 64
    model = make_model(name, 16).eval()
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


def test_unnormalised_head_and_feature_split():
    model = make_model("small_cnn", 8, normalize=False).eval()
    x = torch.randn(3, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (3, model.feature_dim)
    torch.testing.assert_close(model(x), model.head(features))


def test_freeze_bn_keeps_running_stats():
    model = make_model("small_cnn", 8, freeze_bn=True).train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(torch.randn(4, 3, 32, 32) + 3.0)
    torch.testing.assert_close(bn.running_mean, before)
    assert not bn.training and bn.weight.requires_grad
    unfrozen = make_model("small_cnn", 8).train()
    bn2 = next(m for m in unfrozen.modules() if isinstance(m, torch.nn.BatchNorm2d))
    unfrozen(torch.randn(4, 3, 32, 32) + 3.0)
    assert not torch.equal(bn2.running_mean, before)


def test_errors():
    with pytest.raises(ValueError, match="unknown model"):
        make_model("vgg", 8)
    with pytest.raises(ValueError, match="no pretrained"):
        make_model("small_cnn", 8, pretrained=True)
    with pytest.raises(ValueError, match="positive"):
        make_model("small_cnn", 0)


def test_pretrained_without_internet_fails_clearly(monkeypatch, tmp_path):
    import urllib.error

    import torch.hub

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="download https://download.pytorch.org/.*resnet18"):
        make_model("resnet18", 8, pretrained=True)


@pytest.mark.parametrize("pretrained, freeze_bn, frozen", [(False, None, False), (True, None, True),
                                                           (True, False, False), (False, True, True)])
def test_torchvision_backbones_freeze_batchnorm_when_pretrained_by_default(monkeypatch, pretrained, freeze_bn, frozen):
    # A stand-in for torchvision's constructor, so that pretrained=True downloads nothing.
    import rankdml.models as models

    def stand_in(arch, use_weights):
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten()), 4

    monkeypatch.setattr(models, "_torchvision_backbone", stand_in)
    kwargs = {} if freeze_bn is None else {"freeze_bn": freeze_bn}
    model = make_model("resnet50", 8, pretrained=pretrained, **kwargs).train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert model.freeze_bn is frozen and bn.training is not frozen
    assert not make_model("small_cnn", 8).freeze_bn  # trained from scratch: statistics move
