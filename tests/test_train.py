import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rankdml import seed_everything
from rankdml.data import ArrayDataset, PKSampler
from rankdml.losses.classification import NormSoftmaxLoss
from rankdml.models import small_cnn
from rankdml.train import History, fit


def toy_dataset(classes=6, per_class=6, seed=0):
    """Tiny 8x8 images whose colour depends on the class, plus noise."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (classes, 1, 1, 3))
    images = np.clip(colours.repeat(per_class, 0) + rng.normal(0, 40, (classes * per_class, 8, 8, 3)), 0, 255)
    labels = np.repeat(np.arange(classes), per_class)
    to_float = lambda x: x.float() / 127.5 - 1  # noqa: E731
    return ArrayDataset(images.astype(np.uint8), labels, [str(c) for c in range(classes)], to_float)


def run(epochs, checkpoint_dir=None, seed=0):
    seed_everything(seed)
    data = toy_dataset()
    model = small_cnn(8, widths=(8, 16))
    loss = NormSoftmaxLoss(data.num_classes, 8, temperature=0.1)
    loader = DataLoader(data, batch_sampler=PKSampler(data.labels, 3, 4, seed=seed))
    return fit(model, loss, loader, epochs=epochs, lr=1e-2, eval_sets={"train": data}, ks=(1, 2),
               checkpoint_dir=checkpoint_dir, progress=False), model


def test_two_runs_are_identical():
    (h1, m1), (h2, m2) = run(2), run(2)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h.records]  # noqa: E731
    assert strip(h1) == strip(h2)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)


def test_history_records_losses_and_metrics():
    history, _ = run(2)
    assert [r["epoch"] for r in history.records] == [0, 1, 2]
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
    assert set(history.last) >= {"loss", "seconds", "train/recall@1", "train/recall@2", "train/map@r", "train/nmi"}
    assert history.best("train/recall@1")["train/recall@1"] == max(history["train/recall@1"])
    with pytest.raises(ValueError, match="no epoch recorded"):
        history.best("test/recall@1")


def test_training_fits_the_toy_data():
    history, _ = run(6)
    assert history["loss"][-1] < history["loss"][0]
    assert history["train/recall@1"][-1] > history["train/recall@1"][0]


def test_resume_gives_the_same_run(tmp_path):
    straight, m_straight = run(3)
    run(2, checkpoint_dir=tmp_path)
    assert (tmp_path / "last.pt").exists()
    resumed, m_resumed = run(3, checkpoint_dir=tmp_path)
    assert [r["epoch"] for r in resumed.records] == [0, 1, 2, 3]
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h.records]  # noqa: E731
    assert strip(resumed) == strip(straight)
    for p1, p2 in zip(m_straight.parameters(), m_resumed.parameters()):
        assert torch.equal(p1, p2)


def test_history_json_roundtrip(tmp_path):
    history = History([{"epoch": 0, "val/recall@1": 0.5}, {"epoch": 1, "loss": 1.0, "val/recall@1": 0.75}])
    history.to_json(tmp_path / "h.json")
    assert History(__import__("json").loads((tmp_path / "h.json").read_text())).records == history.records
    assert history.epochs("loss") == [1]


def test_bad_arguments():
    data = toy_dataset()
    model, loss = small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, loss, DataLoader(data, batch_size=4), epochs=-1)
    with pytest.raises(ValueError, match="no batch"):
        fit(model, loss, DataLoader(data, batch_size=100, drop_last=True), epochs=1)
    with pytest.raises(ValueError, match="CUDA is not available"):
        if torch.cuda.is_available():
            pytest.skip("CUDA present")
        fit(model, loss, DataLoader(data, batch_size=4), epochs=1, device="cuda")


def test_seed_everything_fixes_threads():
    seed_everything(0, threads=1)
    assert torch.get_num_threads() == 1
    a = torch.rand(3)
    seed_everything(0)
    assert torch.get_num_threads() == 2
    torch.testing.assert_close(a, torch.rand(3))


def test_progress_bars_honour_tqdm_disable(monkeypatch):
    from rankdml.runtime import progress

    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress(range(3)).disable
    monkeypatch.setenv("TQDM_DISABLE", "")
    bar = progress(range(3))
    assert not bar.disable
    bar.close()
    assert progress(range(3), disable=True).disable
