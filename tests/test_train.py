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


# --------------------------------------------------------------------------------------------------
# the loop for stateful methods (issue 16)
# --------------------------------------------------------------------------------------------------

from rankdml.callbacks import Callback  # noqa: E402
from rankdml.data import with_indices  # noqa: E402
from rankdml.losses import TripletLoss  # noqa: E402
from rankdml.mining import BatchHardMiner  # noqa: E402
from rankdml.train import NonFiniteLossError, evaluate_split, evaluate_splits  # noqa: E402


def pk_loader(data, seed=0):
    return DataLoader(data, batch_sampler=PKSampler(data.labels, 3, 4, seed=seed))


def test_max_steps_stops_in_the_middle_of_an_epoch():
    seed_everything(0)
    data = toy_dataset()
    loader = pk_loader(data)
    n = len(loader)
    steps = []
    cb = type("C", (Callback,), {"on_step_end": lambda self, s: steps.append((s.step, s.epoch, s.total_steps))})()
    history = fit(small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8), loader, epochs=10, max_steps=n + 2,
                  eval_sets={"train": data}, ks=(1,), callbacks=[cb], progress=False)
    assert [s[0] for s in steps] == list(range(1, n + 3)) and steps[-1][1] == 2 and steps[-1][2] == n + 2
    assert [r["epoch"] for r in history.records] == [0, 1, 2] and "train/recall@1" in history.last
    only_steps = fit(small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8), loader, max_steps=n + 1, progress=False)
    assert [r["epoch"] for r in only_steps.records] == [1, 2]  # epochs=None: as many as max_steps needs


class CountingMiner(BatchHardMiner):
    calls = 0

    def __call__(self, embeddings, labels):
        CountingMiner.calls += 1
        return super().__call__(embeddings, labels)


@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_fit_with_a_miner_a_scheduler_and_a_query_gallery_set(interval):
    seed_everything(0)
    data = toy_dataset()
    query, gallery = toy_dataset(seed=1), toy_dataset(seed=2)
    model = small_cnn(8, widths=(8,), normalize=True)
    loss = TripletLoss(margin=0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    loader = pk_loader(data)
    CountingMiner.calls = 0
    steps = []
    count = type("C", (Callback,), {"on_step_end": lambda self, s: steps.append(s.step)})()
    history = fit(model, loss, loader, epochs=2, optimizer=optimizer, scheduler=scheduler,
                  scheduler_interval=interval, miner=CountingMiner(), eval_sets={"qg": (query, gallery)}, ks=(1, 2),
                  callbacks=[count], progress=False)
    steps = len(steps)
    assert CountingMiner.calls == steps
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** (2 if interval == "epoch" else steps))
    assert set(history.last) >= {"qg/recall@1", "qg/recall@2", "qg/map@r"} and "qg/nmi" not in history.last
    expected = evaluate_split(model, (query, gallery), ks=(1, 2), progress=False)
    assert {k: history.last[f"qg/{k}"] for k in expected} == expected


def test_a_non_finite_loss_is_an_error():
    class NaNLoss(torch.nn.Module):
        def forward(self, embeddings, labels):
            return embeddings.sum() * float("nan")

    data = toy_dataset()
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 1, batch 0"):
        fit(small_cnn(8, widths=(8,)), NaNLoss(), pk_loader(data), epochs=1, progress=False)
    assert issubclass(NonFiniteLossError, ValueError)


def test_progress_false_prints_no_bar(capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    data = toy_dataset()
    fit(small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8), pk_loader(data), epochs=1, eval_sets={"train": data},
        ks=(1,), progress=False)
    out = capsys.readouterr()
    assert "embed" not in out.err + out.out and "epoch" not in out.err + out.out
    fit(small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8), pk_loader(data), epochs=1, eval_sets={"train": data},
        ks=(1,), progress=True)
    assert "embed" in capsys.readouterr().err  # the check above can fail


def test_step_evaluation_and_custom_evaluators():
    seed_everything(0)
    data = toy_dataset()
    seen_by_callbacks = []

    def loss_scale(state):
        assert not state.model.training and not torch.is_grad_enabled()
        return {"temperature": state.loss.temperature, "step": state.step}

    class Watch(Callback):
        def on_step_end(self, state):
            if state.step % 2 == 0:
                seen_by_callbacks.append(state.last_eval["custom/step"])

    loader = pk_loader(data)
    history = fit(small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8, temperature=0.1), loader, epochs=2,
                  eval_sets={"train": data}, evaluators={"custom": loss_scale}, evaluate_every_steps=2, ks=(1,),
                  callbacks=[Watch()], progress=False)
    reference = PKSampler(data.labels, 3, 4, seed=0)
    total = len(list(reference)) + len(list(reference))  # epochs 0 and 1 (their lengths may differ)
    steps = list(range(2, total + 1, 2))
    assert history.steps("train/recall@1")[0] == steps and history.steps("custom/step")[1] == steps
    assert seen_by_callbacks == steps  # evaluation precedes the callbacks of the same step
    assert history["custom/temperature"] == [0.1, 0.1, 0.1]  # epochs 0, 1, 2


class IndexedLoss(NormSoftmaxLoss):
    needs_batch_indices = True
    received = []

    def forward(self, embeddings, labels, batch_indices):
        IndexedLoss.received.append(batch_indices.tolist())
        return super().forward(embeddings, labels)


def test_a_loss_that_needs_batch_indices_gets_them():
    seed_everything(0)
    data = with_indices(toy_dataset())
    IndexedLoss.received = []
    fit(small_cnn(8, widths=(8,)), IndexedLoss(6, 8), pk_loader(data, seed=4), epochs=1, progress=False)
    assert IndexedLoss.received == list(PKSampler(data.labels, 3, 4, seed=4))
    with pytest.raises(ValueError, match="with_indices"):
        fit(small_cnn(8, widths=(8,)), IndexedLoss(6, 8), pk_loader(toy_dataset()), epochs=1, progress=False)


def test_a_sampler_updated_during_the_epoch_refuses_workers():
    class Updated(PKSampler):
        updates_during_epoch = True

    data = toy_dataset()
    loader = DataLoader(data, batch_sampler=Updated(data.labels, 3, 4), num_workers=2)
    with pytest.raises(ValueError, match="num_workers=2"):
        fit(small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8), loader, epochs=1, progress=False)


def test_more_bad_arguments():
    data = toy_dataset()
    model, loss, loader = small_cnn(8, widths=(8,)), NormSoftmaxLoss(6, 8), pk_loader(data)
    with pytest.raises(ValueError, match="epochs .* or max_steps"):
        fit(model, loss, loader)
    with pytest.raises(ValueError, match="max_steps"):
        fit(model, loss, loader, max_steps=0)
    with pytest.raises(ValueError, match="scheduler_interval"):
        fit(model, loss, loader, epochs=1, scheduler_interval="batch")
    with pytest.raises(ValueError, match="precision"):
        fit(model, loss, loader, epochs=1, precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA only"):
            fit(model, loss, loader, epochs=1, precision="bf16", device="cpu")
    with pytest.raises(ValueError, match=r"\(images, labels\)"):
        fit(model, loss, DataLoader([(torch.zeros(3, 8, 8),)] * 4, batch_size=2), epochs=1, progress=False)


def test_evaluate_splits_names_every_split():
    data = toy_dataset()
    model = small_cnn(8, widths=(8,))
    out = evaluate_splits(model, {"a": data, "b": (data, data)}, ks=(1,), progress=False)
    assert out["a/recall@1"] == evaluate_split(model, data, ks=(1,), progress=False)["recall@1"]
    assert "a/nmi" in out and "b/nmi" not in out and "b/map@r" in out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda_with_bf16_and_distance_weighted_sampling():
    from rankdml.losses import MarginLoss
    from rankdml.mining import DistanceWeightedSampler

    seed_everything(0)
    data = toy_dataset()
    history = fit(small_cnn(8, widths=(8,), normalize=True),
                  MarginLoss(sampler=DistanceWeightedSampler(generator=torch.Generator().manual_seed(0))),
                  pk_loader(data), epochs=1, device="cuda", precision="bf16", eval_sets={"train": data}, ks=(1,),
                  progress=False)
    assert np.isfinite(history.last["loss"])
