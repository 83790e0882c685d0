"""parameter_groups: backbone / head / loss groups, their rates, and the deprecated MarginLoss alias."""
import pytest
import torch

from rankdml.losses import MarginLoss, NormSoftmaxLoss, param_groups
from rankdml.models import small_cnn
from rankdml.optim import parameter_groups


def ids(params):
    return {id(p) for p in params}


def test_backbone_head_and_loss_groups():
    model, loss = small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8)
    groups = parameter_groups(model, loss, lr=1e-4, weight_decay=1e-4, head="head", head_lr=5e-4, loss_lr=1e-2,
                              loss_weight_decay=0.0)
    by_name = {g["name"]: g for g in groups}
    assert ids(by_name["head"]["params"]) == ids(model.head.parameters())
    assert ids(by_name["backbone"]["params"]) == ids(model.backbone.parameters())
    assert ids(by_name["loss"]["params"]) == ids(loss.parameters())
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(1e-4, 1e-4), (5e-4, 1e-4), (1e-2, 0.0)]
    every = [id(p) for g in groups for p in g["params"]]
    assert len(every) == len(set(every)) == len(list(model.parameters())) + len(list(loss.parameters()))
    opt = torch.optim.Adam(groups)  # optimisers accept the "name" key
    assert [g["name"] for g in opt.param_groups] == ["backbone", "head", "loss"]


def test_defaults_inherit_and_empty_groups_are_left_out():
    model = small_cnn(8, widths=(8,))
    groups = parameter_groups(model, MarginLoss(learn_beta=False), lr=1e-3, weight_decay=0.1)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in groups] == [("backbone", 1e-3, 0.1)]
    with_head = parameter_groups(model, lr=1e-3, head=model.head)
    assert [(g["name"], g["lr"]) for g in with_head] == [("backbone", 1e-3), ("head", 1e-3)]


def test_frozen_parameters_are_not_optimised():
    model = small_cnn(8, widths=(8,))
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    groups = parameter_groups(model, lr=1e-3, head="head")
    assert [g["name"] for g in groups] == ["head"]


def test_bad_heads():
    model = small_cnn(8, widths=(8,))
    with pytest.raises(ValueError, match="no sub-module 'neck'.*children"):
        parameter_groups(model, lr=1e-3, head="neck")
    with pytest.raises(ValueError, match="not a sub-module"):
        parameter_groups(model, lr=1e-3, head=torch.nn.Linear(2, 2))


def test_the_deprecated_margin_alias_keeps_its_groups():
    model, loss = torch.nn.Linear(6, 6), MarginLoss()
    with pytest.warns(DeprecationWarning, match="parameter_groups"):
        groups = param_groups(model, loss, lr=1e-3, beta_lr=0.1, weight_decay=0.01)
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(1e-3, 0.01), (0.1, 0.0)]
    assert groups[1]["params"] == [loss.beta] and ids(groups[0]["params"]) == ids(model.parameters())
    new = parameter_groups(model, loss, lr=1e-3, weight_decay=0.01, loss_lr=0.1, loss_weight_decay=0.0)
    assert [(g["lr"], g["weight_decay"], ids(g["params"])) for g in new] == \
        [(g["lr"], g["weight_decay"], ids(g["params"])) for g in groups]
