"""Full-state checkpoints: a resumed run equals the uninterrupted one; safe loading; config refusal."""
import builtins
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rankdml import seed_everything
from rankdml.callbacks import Callback
from rankdml.checkpoint import config_mismatch, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from rankdml.data import ArrayDataset, PKSampler, with_indices
from rankdml.losses import MarginLoss, NormSoftmaxLoss
from rankdml.mining import DistanceWeightedSampler
from rankdml.models import small_cnn
from rankdml.train import fit


@pytest.fixture(scope="module", autouse=True)
def no_onednn():
    """oneDNN's CPU convolution backward is not bitwise reproducible between runs that differ in their
    history (measured: the first conv's weight gradient differs in the last bits after a resume,
    and is equal with oneDNN off); the reproducible numeric mode switches it off too."""
    with torch.backends.mkldnn.flags(enabled=False):
        yield


def noisy_toy_dataset(classes=6, per_class=6, seed=0):
    """Tiny 8x8 images coloured by class; the transform adds fresh noise (an augmentation on torch's RNG)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (classes, 1, 1, 3))
    images = np.clip(colours.repeat(per_class, 0) + rng.normal(0, 40, (classes * per_class, 8, 8, 3)), 0, 255)
    augment = lambda x: x.float() / 127.5 - 1 + 0.5 * torch.randn(x.shape)  # noqa: E731
    return ArrayDataset(images.astype(np.uint8), np.repeat(np.arange(classes), per_class),
                        [str(c) for c in range(classes)], augment)


class RandomLR(Callback):
    """A stateful callback drawing its own random numbers: a random lr every step, and a running count.

    It draws from its own generator (saved in state_dict) and from Python's and NumPy's global
    generators (saved by the checkpoint's RNG states), so a resume that forgot either diverges.
    """

    def __init__(self, seed=0):
        self.generator = torch.Generator().manual_seed(seed)
        self.draws = 0

    def on_step_end(self, state):
        scale = 0.5 + torch.rand((), generator=self.generator).item() + 0.1 * random.random() + 0.1 * np.random.rand()
        for group in state.optimizer.param_groups:
            group["lr"] = 1e-2 * scale
        self.draws += 1

    def state_dict(self):
        return {"generator": self.generator.get_state(), "draws": self.draws}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
        self.draws = state["draws"]


class Interrupt(Callback):
    """Raises at the end of a given step, before that step's checkpoint: the process 'dies' there."""

    def __init__(self, at_step=None):
        self._at_step = at_step  # private: not part of the run's configuration

    def on_step_end(self, state):
        if self._at_step is not None and state.step == self._at_step:
            raise KeyboardInterrupt(f"interrupted at step {state.step}")

    def on_epoch_end(self, state, record):  # at_step="end 1": after epoch 1's last step, before its checkpoint
        if self._at_step == f"end {state.epoch}":
            raise KeyboardInterrupt(f"interrupted at the end of epoch {state.epoch}")


def margin_run(epochs, checkpoint_dir=None, interrupt_at=None, every=None, max_steps=None, workers=0):
    seed_everything(0, threads=1)
    data = with_indices(noisy_toy_dataset())
    model = small_cnn(8, widths=(8, 16), normalize=True)
    loss = MarginLoss(margin=0.2, beta=1.2, sampler=DistanceWeightedSampler(seed=0))
    loader = DataLoader(data, batch_sampler=PKSampler(data.labels, 3, 4, seed=0), num_workers=workers)  # 4 batches/epoch
    optimizer = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=1e-2, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)
    callbacks = [RandomLR(), Interrupt(interrupt_at)]
    history = fit(model, loss, loader, epochs=epochs, max_steps=max_steps, optimizer=optimizer, scheduler=scheduler,
                  eval_sets={"train": data}, ks=(1, 2), checkpoint_dir=checkpoint_dir, checkpoint_every_steps=every,
                  callbacks=callbacks, progress=False)
    return history, model, loss, callbacks[0]


def strip(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history.records]


def assert_same_run(a, b):
    (h1, m1, l1, c1), (h2, m2, l2, c2) = a, b
    assert strip(h1) == strip(h2)
    for (name, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(p1, p2), name
    assert torch.equal(l1.beta, l2.beta)
    assert c1.draws == c2.draws
    assert torch.equal(l1.sampler.generator.get_state(), l2.sampler.generator.get_state())


@pytest.fixture(scope="module")
def straight():
    return margin_run(3)


def test_resume_at_an_epoch_end_equals_the_uninterrupted_run(straight, tmp_path):
    """MarginLoss + DistanceWeightedSampler + a stateful random callback + a scheduler, resumed after epoch 2."""
    margin_run(2, checkpoint_dir=tmp_path)
    resumed = margin_run(3, checkpoint_dir=tmp_path)
    assert [r["epoch"] for r in resumed[0].records] == [0, 1, 2, 3]
    assert_same_run(resumed, straight)


@pytest.mark.parametrize("forget", ["callback", "sampler", "rng"])
def test_a_resume_that_forgets_some_state_diverges(straight, tmp_path, monkeypatch, forget):
    """Guard for the equality tests: they do detect a state the checkpoint fails to restore."""
    margin_run(2, checkpoint_dir=tmp_path)
    if forget == "rng":
        monkeypatch.setattr("rankdml.train.set_rng_state", lambda state: None)
    else:
        target = RandomLR if forget == "callback" else DistanceWeightedSampler
        monkeypatch.setattr(target, "load_state_dict", lambda self, state: None)
    resumed = margin_run(3, checkpoint_dir=tmp_path)
    assert strip(resumed[0])[:3] == strip(straight[0])[:3]
    with pytest.raises(AssertionError):
        assert_same_run(resumed, straight)


@pytest.mark.parametrize("interrupt_at, every, saved_step", [(7, 1, 6), (8, 3, 6), (3, 1, 2), ("end 1", 1, 4)])
def test_resume_in_the_middle_of_an_epoch_equals_the_uninterrupted_run(straight, tmp_path, interrupt_at, every,
                                                                       saved_step):
    """Interrupted inside epoch 2 (steps 5-8), inside epoch 1, or after epoch 1's last step, before its end."""
    with pytest.raises(KeyboardInterrupt):
        margin_run(3, checkpoint_dir=tmp_path, interrupt_at=interrupt_at, every=every)
    saved = load_checkpoint(tmp_path / "last.pt")
    assert not saved["epoch_finished"] and saved["step"] == saved_step
    resumed = margin_run(3, checkpoint_dir=tmp_path, every=every)
    assert_same_run(resumed, straight)


def test_resume_in_the_middle_of_an_epoch_with_workers(tmp_path):
    """Worker processes augment with seeds drawn when the epoch's iterator starts: replayed identically."""
    straight_with_workers = margin_run(2, workers=2)
    with pytest.raises(KeyboardInterrupt):
        margin_run(2, checkpoint_dir=tmp_path, interrupt_at=7, every=1, workers=2)
    assert_same_run(margin_run(2, checkpoint_dir=tmp_path, every=1, workers=2), straight_with_workers)


def test_max_steps_then_resume(tmp_path):
    """max_steps stops mid-epoch; the stopped run's checkpoint is complete and resuming it adds nothing."""
    h, *_ = margin_run(3, checkpoint_dir=tmp_path, max_steps=6)
    assert [r["epoch"] for r in h.records] == [0, 1, 2] and "train/recall@1" in h.last
    again, *_ = margin_run(3, checkpoint_dir=tmp_path, max_steps=6)
    assert strip(again) == strip(h)


def test_a_different_configuration_is_refused(tmp_path):
    margin_run(1, checkpoint_dir=tmp_path)
    seed_everything(0)
    data = noisy_toy_dataset()
    loader = DataLoader(data, batch_sampler=PKSampler(data.labels, 3, 4, seed=0))
    with pytest.raises(ValueError, match=r"different configuration(.|\n)*loss: checkpoint has MarginLoss"):
        fit(small_cnn(8, widths=(8, 16), normalize=True), NormSoftmaxLoss(6, 8), loader, epochs=2,
            checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="sampler: checkpoint has PKSampler.*seed=0.*seed=1"):
        fit(small_cnn(8, widths=(8, 16), normalize=True),
            MarginLoss(margin=0.2, beta=1.2, sampler=DistanceWeightedSampler(seed=0)),
            DataLoader(data, batch_sampler=PKSampler(data.labels, 3, 4, seed=1)), epochs=2,
            checkpoint_dir=tmp_path, progress=False)


def test_config_mismatch_names_every_difference():
    lines = config_mismatch({"a": "1", "b": "x", "c": "z"}, {"a": "1", "b": "y"})
    assert lines == ["b: checkpoint has x, this run has y", "c: checkpoint has z, this run has <absent>"]
    assert config_mismatch({"a": "1"}, {"a": "1"}) == []


class _RunsCode:
    def __reduce__(self):
        return exec, ("import builtins; builtins._rankdml_code_ran = True",)


def test_loading_never_runs_code(tmp_path):
    torch.save({"model": {}, "payload": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not hasattr(builtins, "_rankdml_code_ran")
    with pytest.raises(ValueError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    np.random.randn()  # leaves a cached Gaussian in NumPy's legacy state
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    first = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3))
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    second = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3))
    assert first[:4] == second[:4] and torch.equal(first[4], second[4])


def test_save_is_atomic(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", {"step": 1})
    real_save = torch.save

    def crash(obj, f):
        real_save({"half": 1}, f)
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path) == {"step": 1}  # the old checkpoint is intact


def test_an_old_checkpoint_format_is_refused(tmp_path):
    save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
    data = noisy_toy_dataset()
    with pytest.raises(ValueError, match="another version"):
        fit(small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8), DataLoader(data, batch_size=12), epochs=2,
            checkpoint_dir=tmp_path, progress=False)


def test_distance_weighted_sampler_state_round_trip():
    x = torch.nn.functional.normalize(torch.randn(12, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    y = torch.arange(4).repeat_interleave(3)
    sampler = DistanceWeightedSampler(seed=7)
    sampler(x, y)
    saved = sampler.state_dict()
    after = sampler(x, y)
    fresh = DistanceWeightedSampler(seed=7)
    fresh.load_state_dict(saved)
    for u, v in zip(after, fresh(x, y)):
        assert torch.equal(u, v)
    # the draws differ from one call to the next (the test above could not pass by accident)
    assert any(not torch.equal(u, v) for u, v in zip(sampler(x, y), after))
    with pytest.raises(ValueError, match="either seed or generator"):
        DistanceWeightedSampler(seed=1, generator=torch.Generator())


def test_distance_weighted_sampler_seed_equals_a_cpu_generator():
    x = torch.nn.functional.normalize(torch.randn(12, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    y = torch.arange(4).repeat_interleave(3)
    a = DistanceWeightedSampler(seed=5)(x, y)
    b = DistanceWeightedSampler(generator=torch.Generator().manual_seed(5))(x, y)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_distance_weighted_sampler_on_cuda():
    x = torch.nn.functional.normalize(torch.randn(12, 5, device="cuda"), dim=1)
    y = torch.arange(4, device="cuda").repeat_interleave(3)
    seeded = DistanceWeightedSampler(seed=5)
    a, p, n = seeded(x, y)
    assert a.device.type == n.device.type == "cuda" and seeded.generator.device.type == "cuda"
    assert (y[a] != y[n]).all()
    saved = seeded.state_dict()
    after = seeded(x, y)
    restored = DistanceWeightedSampler(seed=5)
    restored.load_state_dict(saved)
    assert all(torch.equal(u, v) for u, v in zip(after, restored(x, y)))
    # a CPU generator with CUDA data (chapter 2 as first written) works too
    a2, _, n2 = DistanceWeightedSampler(generator=torch.Generator().manual_seed(5))(x, y)
    assert n2.device.type == "cuda" and (y[a2] != y[n2]).all()
