"""Callbacks in fit: hook order and counts, the state they see, stopping, the old function form."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rankdml import seed_everything
from rankdml.callbacks import Callback, EarlyStopping, EpochFunction, TrainState, as_callback
from rankdml.data import ArrayDataset, PKSampler, with_indices
from rankdml.losses import NormSoftmaxLoss
from rankdml.models import small_cnn
from rankdml.train import fit


def toy(classes=6, per_class=6, seed=0):
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (classes, 1, 1, 3))
    images = np.clip(colours.repeat(per_class, 0) + rng.normal(0, 40, (classes * per_class, 8, 8, 3)), 0, 255)
    return ArrayDataset(images.astype(np.uint8), np.repeat(np.arange(classes), per_class),
                        [str(c) for c in range(classes)], lambda x: x.float() / 127.5 - 1)


class Recorder(Callback):
    """Logs every hook with (step, epoch, batch_in_epoch) and checks the state's last-batch fields."""

    def __init__(self):
        self.calls = []
        self.losses = []

    def on_fit_start(self, state):
        self.calls.append(("fit_start", state.step, state.epoch))

    def on_epoch_start(self, state):
        self.calls.append(("epoch_start", state.step, state.epoch))

    def on_step_end(self, state):
        assert state.embeddings.shape == (12, 8) and not state.embeddings.requires_grad
        assert state.labels.shape == (12,) and isinstance(state.loss_value, float)
        assert state.optimizer is not None and state.model.training
        self.calls.append(("step_end", state.step, state.epoch, state.batch_in_epoch))
        self.losses.append(state.loss_value)

    def on_epoch_end(self, state, record):
        record["recorder/seen"] = float(len(self.losses))  # a callback may add metrics to the record
        self.calls.append(("epoch_end", state.step, state.epoch))

    def on_fit_end(self, state):
        self.calls.append(("fit_end", state.step, state.epoch))


def loader_of(data, seed=0):
    return DataLoader(data, batch_sampler=PKSampler(data.labels, 3, 4, seed=seed))


def test_hooks_are_called_in_order_with_the_right_counts():
    seed_everything(0)
    data = toy()
    recorder = Recorder()
    loader = loader_of(data)
    n = len(loader)
    history = fit(small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8), loader, epochs=2, callbacks=[recorder],
                  progress=False)
    expected = [("fit_start", 0, 0)]
    for epoch in (1, 2):
        expected.append(("epoch_start", (epoch - 1) * n, epoch))
        expected += [("step_end", (epoch - 1) * n + b, epoch, b) for b in range(1, n + 1)]
        expected.append(("epoch_end", epoch * n, epoch))
    expected.append(("fit_end", 2 * n, 2))
    assert recorder.calls == expected
    assert history["recorder/seen"] == [n, 2 * n]
    assert history["loss"] == pytest.approx([np.mean(recorder.losses[:n]), np.mean(recorder.losses[n:])], rel=1e-12)


def test_the_state_has_the_promised_fields():
    names = {f for f in TrainState.__dataclass_fields__}
    assert names >= {"step", "epoch", "steps_per_epoch", "total_steps", "model", "loss", "optimizer", "device",
                     "loader", "embeddings", "labels", "batch_indices", "loss_value", "should_stop"}


def test_batch_indices_are_the_items_true_indices():
    """Through with_indices, state.batch_indices are exactly the sampler's batches of each epoch."""
    seed_everything(0)
    data = with_indices(toy())
    seen = []

    class Collect(Callback):
        def on_step_end(self, state):
            seen.append(state.batch_indices.tolist())
            assert torch.equal(torch.as_tensor(data.labels)[state.batch_indices.cpu()], state.labels.cpu())

    fit(small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8), loader_of(data, seed=3), epochs=2, callbacks=[Collect()],
        progress=False)
    reference = PKSampler(data.labels, 3, 4, seed=3)
    expected = list(reference) + list(reference)  # epochs 0 and 1 of the same sampler
    assert seen == expected
    assert data[5][2] == 5 and data[5][1] == toy()[5][1] and torch.equal(data[5][0], toy()[5][0])


def test_without_indices_the_state_has_none():
    seed_everything(0)
    data = toy()
    got = []
    fit(small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8), loader_of(data), epochs=1, progress=False,
        callbacks=[type("C", (Callback,), {"on_step_end": lambda self, s: got.append(s.batch_indices)})()])
    assert got and all(g is None for g in got)


def test_a_callback_can_stop_training_mid_epoch():
    seed_everything(0)
    data = toy()

    class StopAtThree(Callback):
        def on_step_end(self, state):
            if state.step == 3:
                state.should_stop = True

    recorder = Recorder()
    history = fit(small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8), loader_of(data), epochs=5,
                  callbacks=[StopAtThree(), recorder], eval_sets={"train": data}, ks=(1,), progress=False)
    assert [c[1] for c in recorder.calls if c[0] == "step_end"] == [1, 2, 3]
    assert [r["epoch"] for r in history.records] == [0, 1] and "train/recall@1" in history.last  # final evaluation
    assert recorder.calls[-1] == ("fit_end", 3, 1)


def test_old_function_callbacks_still_work():
    seed_everything(0)
    data = toy()
    calls = []

    def old_style(epoch, record, model):
        assert isinstance(model, torch.nn.Module)
        record["old/epoch_squared"] = float(epoch ** 2)
        calls.append(epoch)

    history = fit(small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8), loader_of(data), epochs=3,
                  callbacks=[old_style], progress=False)
    assert calls == [1, 2, 3] and history["old/epoch_squared"] == [1.0, 4.0, 9.0]
    assert isinstance(as_callback(old_style), EpochFunction) and "old_style" in repr(as_callback(old_style))
    with pytest.raises(ValueError, match="Callback or a function"):
        as_callback(42)


def test_early_stopping():
    stopper = EarlyStopping("val/recall@1", patience=2)
    state = TrainState(model=None, loss=None, optimizer=None, device="cpu", loader=None, steps_per_epoch=1,
                       total_steps=10)
    for epoch, value in enumerate([0.1, 0.3, 0.3, 0.2], start=1):
        state.epoch = epoch
        stopper.on_epoch_end(state, {"val/recall@1": value})
        assert state.should_stop == (epoch == 4)
    assert stopper.best == 0.3 and stopper.best_epoch == 2
    restored = EarlyStopping("val/recall@1", patience=2)
    restored.load_state_dict(stopper.state_dict())
    assert restored.state_dict() == stopper.state_dict()
    low = EarlyStopping("loss", mode="min", patience=1)
    state.should_stop = False
    low.on_epoch_end(state, {"loss": 1.0})
    low.on_epoch_end(state, {"loss": 0.5})
    assert not state.should_stop
    low.on_epoch_end(state, {"loss": 0.7})
    assert state.should_stop
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping("loss", mode="lowest")


def test_early_stopping_in_fit():
    seed_everything(0)
    data = toy()
    history = fit(small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8), loader_of(data), epochs=20, lr=0.0,
                  eval_sets={"train": data}, ks=(1,), callbacks=[EarlyStopping("train/recall@1", patience=2)],
                  progress=False)
    # lr 0: epoch 1 sets the best, epochs 2 and 3 do not improve on it (patience 2)
    assert [r["epoch"] for r in history.records] == [0, 1, 2, 3]
