"""`PADS`: the training-loop callback that adapts the negative-sampling distribution with a policy.

Every M steps it embeds a validation split held out within the training classes
(:func:`rankdml.data.holdout.holdout_split`), computes the state metrics and the reward metric,
makes one policy step (:class:`rankdml.pads.policy.PolicyTrainer`) and multiplies the sampling
distribution's bins by the chosen actions. Its :attr:`PADS.sampler` is the miner that feeds the
margin loss: ``MarginLoss(sampler=pads.sampler)`` or ``fit(..., miner=pads.sampler)``.
"""
from __future__ import annotations

import copy
import warnings
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rankdml.callbacks import Callback, TrainState
from rankdml.metrics import retrieval_metrics
from rankdml.pads.distribution import DistributionSampler, SamplingDistribution
from rankdml.pads.policy import Policy, PolicyState, PolicyTrainer, class_distances, reward_metric, sign_reward
from rankdml.runtime import progress as progress_bar

__all__ = ["PADS"]


class PADS(Callback):
    """Policy-adapted negative sampling (Roth, Milbich, Ommer, CVPR 2020) as a step callback.

    Args (the original's command-line flag and default in brackets; the sample runs' values after "runs:"):
        val_set: the validation split (a data set of (input, label) with `labels`), held out within
            the training classes.
        sample_every: M, training steps between policy updates [--policy_sample_freq 30; runs: 30,
            30, 60]. As in the original the first update comes after M + 1 steps, then every M.
        n_support, support_limit: the distribution's support [--policy_n_support 30,
            --policy_support_limit 0.1 1.4].
        init_distribution, init_params: initial distribution [--policy_init_distr uniform_low,
            --policy_init_params 0.5 0.04] (see :class:`SamplingDistribution`).
        merge_out_of_range: out-of-range distances go to the end bins [--policy_merge_oobs: a no-op in
            the original, which always merges; default True = the original's behaviour].
        same_class_negatives, anchor_as_positive: self-regularisation [--policy_include_pos,
            --policy_include_same, both forced on by the original unless --policy_no_self_reg;
            default True].
        policy_lr [--policy_lr 0.01]; action_values [--policy_action_values 0.5 1 1.5; runs: 0.8 1 1.25];
        policy_size [--policy_size 128 128]; policy_init [--policy_winit_type none];
        use_a2c [not --policy_dont_use_a2c: True]; ema_alpha [--policy_baseline_ema_gamma 0.05];
        discount [--policy_reward_update_w 0.99]; ppo_clip [--policy_ppo_ratio 0.2];
        mode [--policy_mode ppo]; old_policy_update [--policy_old_update_iter 3; runs: 5];
        running_averages [--policy_run_avgs 2 8 16 32]; no_average [--policy_run_avgs_no_avg False];
        state_metrics [--policy_state_metrics recall nmi dists; runs: recall dists nmi];
        metric_history [--policy_metric_history 10; runs: 20]; reward_type [--policy_reward_type 2;
        runs: 1, 2, 2]; distribution_history [--policy_parameter_history 1];
        training_delay: epochs before PADS starts [--policy_training_delay 0];
        sub_episodes: intermediate reward evaluations per policy step, combined with discount 0.7
            [--policy_sup_metric_collect -1 = off];
        include_train_metrics, train_eval_set: add metrics on a training-data evaluation set to the
            state [--policy_include_train_metrics False];
        ks: the k of Recall@k [--k_vals 1 2 4 8; SOP 1 10 100 1000]; the reward uses the first.
        scramble_dataloaders, scramble_every: [--policy_scramble_dataloaders False,
            --policy_scramble_freq 1e8]: re-splitting train/val mid-run is not supported (True raises).
        value_target: "td" (default: the value head regresses on the A2C target, the reward scale) or
            "metric" (the original: on the raw reward metric).
        batch_size: evaluation batch size. seed: seeds the miner's and the policy's generators.
        nmi_seed: k-means seed of the NMI. progress: show a bar while embedding the validation set.
        backend: k-NN back-end of :func:`rankdml.metrics.retrieval_metrics`.

    Not reachable because they only log: --policy_log_distr_plots, --wandb_*; --policy_no_baseline is
    parsed but unused by the original. The train/val split (--train_val_split 0.85,
    --train_val_split_by_class) is :func:`rankdml.data.holdout.holdout_split`; the learner's flags
    (--lr, --beta, --tau, ...) belong to the loss and the loop. :mod:`rankdml.pads.original` maps every
    flag, has the original's defaults and sample runs, and ``PADS(val, **pads_arguments(flags))``
    builds the callback from the original's flags. The run's --seed (1) is the caller's: pass it as `seed`.

    Attributes:
        distribution, sampler, policy, trainer, state_maker; `history`: one dict per policy update
        (step, epoch, reward_metric, reward, entropy, probs, the metrics, ...).

    The policy runs on the CPU whatever the training device (an MLP called once every M steps), so
    its draws do not depend on the device; the miner draws on the embeddings' device.
    """

    supports_distributed = False  # fit refuses it on several processes, saying why
    distributed_note = ("the policy's reward, state and update are computed in one process; keeping them identical "
                        "on every rank is not implemented")

    def __init__(self, val_set: Dataset, *, sample_every: int = 30, n_support: int = 30,
                 support_limit: Sequence[float] = (0.1, 1.4), init_distribution: str = "uniform_low",
                 init_params: Sequence[float] = (0.5, 0.04), merge_out_of_range: bool = True,
                 same_class_negatives: bool = True, anchor_as_positive: bool = True,
                 policy_lr: float = 0.01, action_values: Sequence[float] = (0.5, 1.0, 1.5),
                 policy_size: Sequence[int] = (128, 128), policy_init: str = "none", use_a2c: bool = True,
                 ema_alpha: float = 0.05, discount: float = 0.99, ppo_clip: float = 0.2, mode: str = "ppo",
                 old_policy_update: int = 3, running_averages: Sequence[int] = (2, 8, 16, 32),
                 no_average: bool = False, state_metrics: Sequence[str] = ("recall", "nmi", "dists"),
                 metric_history: int = 10, reward_type: int = 2, distribution_history: int = 1,
                 training_delay: int = 0, sub_episodes: int = -1, include_train_metrics: bool = False,
                 train_eval_set: Dataset | None = None, ks: Sequence[int] = (1, 2, 4, 8),
                 scramble_dataloaders: bool = False, scramble_every: int = 100000000, value_target: str = "td",
                 batch_size: int = 256, seed: int = 0, nmi_seed: int = 0, progress: bool = True,
                 backend: str = "auto"):
        if scramble_dataloaders:
            raise ValueError("PADS: scramble_dataloaders=True (re-splitting train/val during training) is not "
                             "supported; the loop's loader is fixed. Use one holdout_split for the whole run")
        if isinstance(sample_every, bool) or not isinstance(sample_every, int) or sample_every < 1:
            raise ValueError(f"PADS: sample_every must be a positive int, got {sample_every!r}")
        if len(support_limit) != 2:
            raise ValueError(f"PADS: support_limit must be (lower, upper), got {tuple(support_limit)}")
        if include_train_metrics and train_eval_set is None:
            raise ValueError("PADS: include_train_metrics=True needs train_eval_set")
        if not hasattr(val_set, "labels") or len(val_set) < 2:
            raise ValueError("PADS: val_set must be a labelled data set (with `labels`) of at least 2 items; "
                             "build it with rankdml.data.holdout.holdout_split")
        counts = np.bincount(np.asarray(val_set.labels) - np.min(val_set.labels))
        if (counts >= 2).sum() < 1 or (counts > 0).sum() < 2:
            raise ValueError(f"PADS: the validation set needs at least 2 classes and a class with 2 or more items "
                             f"(Recall@k is undefined otherwise); it has {(counts > 0).sum()} classes of at most "
                             f"{counts.max()} items. Hold out more per class (a smaller train_fraction) or by class")
        if not ks or max(ks) > len(val_set) - 1:
            raise ValueError(f"PADS: Recall@k with ks={tuple(ks)} needs a validation set of more than max(ks) items, "
                             f"got {len(val_set)}; lower ks or hold out more")
        if reward_type not in (0, 1, 2):
            raise ValueError(f"PADS: reward_type must be 0 (NMI), 1 (Recall@1) or 2 (both), got {reward_type!r}")
        if training_delay < 0:
            raise ValueError(f"PADS: training_delay must be >= 0 epochs, got {training_delay}")
        self.val_set, self.train_eval_set = val_set, train_eval_set
        self.sample_every, self.reward_type, self.training_delay = sample_every, int(reward_type), int(training_delay)
        self.sub_episodes, self.ks = int(sub_episodes), tuple(int(k) for k in ks)
        self.batch_size, self.nmi_seed, self.progress, self.backend = batch_size, nmi_seed, progress, backend
        self.seed = int(seed)

        self.distribution = SamplingDistribution(n_support, support_limit[0], support_limit[1], init_distribution,
                                                 init_params)
        self.sampler = DistributionSampler(self.distribution, same_class_negatives=same_class_negatives,
                                           anchor_as_positive=anchor_as_positive,
                                           merge_out_of_range=merge_out_of_range, seed=seed)
        self.state_maker = PolicyState(num_bins=self.distribution.num_bins, ks=self.ks, state_metrics=state_metrics,
                                       metric_history=metric_history, running_averages=running_averages,
                                       no_average=no_average, distribution_history=distribution_history,
                                       include_train_metrics=include_train_metrics)
        with torch.random.fork_rng(devices=[]):  # the policy's initial weights from `seed`, not the global RNG
            torch.manual_seed(seed)
            self.policy = Policy(self.state_maker.size, self.distribution.num_bins, policy_size, action_values,
                                 value_head=use_a2c, init=policy_init)
        self.trainer = PolicyTrainer(self.policy, mode=mode, lr=policy_lr, use_a2c=use_a2c, ppo_clip=ppo_clip,
                                     old_policy_update=old_policy_update, discount=discount, ema_alpha=ema_alpha,
                                     value_target=value_target,
                                     generator=torch.Generator().manual_seed(seed + 1))
        self._counter = 0  # the original's train_iter_before_update
        self._sub_rewards: list[float] = []
        self.reward_metrics: list[float] = []
        self.history: list[dict] = []

    # ---------------------------------------------------------------------------------------------
    def _embed(self, model: torch.nn.Module, dataset: Dataset, device: torch.device):
        # its own generator: iterating a DataLoader otherwise draws a base seed from the global RNG, which
        # would shift the training run's random stream whenever PADS evaluates
        loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False, generator=torch.Generator())
        was_training = model.training
        model.eval()
        embs, labs = [], []
        try:
            with torch.no_grad():
                for batch in progress_bar(loader, desc="PADS validation", leave=False,
                                          disable=True if not self.progress else None):
                    embs.append(model(batch[0].to(device)).float().cpu())
                    labs.append(torch.as_tensor(batch[1]).reshape(-1).long())
        finally:
            model.train(was_training)
        return torch.cat(embs), torch.cat(labs)

    def compute_metrics(self, model: torch.nn.Module, dataset: Dataset, device: torch.device) -> dict[str, float]:
        """The state and reward metrics of `model` on `dataset`: recall@k, nmi, dists/intra, dists/inter."""
        emb, lab = self._embed(model, dataset, device)
        need_nmi = "nmi" in self.state_maker.state_metrics or self.reward_type in (0, 2)
        out = retrieval_metrics(emb, lab, self.ks, nmi=need_nmi, seed=self.nmi_seed, backend=self.backend)
        if "dists" in self.state_maker.state_metrics:
            out["dists/intra"], out["dists/inter"] = class_distances(emb, lab)
        return out

    # ---------------------------------------------------------------------------------------------
    def on_fit_start(self, state: TrainState) -> None:
        uses = state.miner is self.sampler or getattr(state.loss, "sampler", None) is self.sampler
        if not uses:
            warnings.warn("PADS: neither the loop's miner nor the loss's sampler is this PADS's sampler, so the "
                          "adapted distribution is not used; pass miner=pads.sampler or MarginLoss(sampler=pads.sampler)")

    def on_step_end(self, state: TrainState) -> None:
        if state.epoch - 1 < self.training_delay:  # the original's epochs count from 0
            return
        if self.sub_episodes > 0 and self._counter != self.sample_every and self._counter in [
                self.sample_every // (self.sub_episodes + 1) * (i + 1) for i in range(self.sub_episodes)]:
            metrics = self.compute_metrics(state.model, self.val_set, state.device)
            self._sub_rewards.append(reward_metric(metrics, self.reward_type, self.ks[0]))
        if self._counter == self.sample_every:
            self._counter = 0
            self.policy_step(state)
        self._counter += 1

    def policy_step(self, state: TrainState) -> dict:
        """Evaluate, update the policy on the last decision, act, and reshape the distribution."""
        metrics = self.compute_metrics(state.model, self.val_set, state.device)
        train_metrics = (self.compute_metrics(state.model, self.train_eval_set, state.device)
                         if self.state_maker.include_train_metrics else None)
        r_metric = reward_metric(metrics, self.reward_type, self.ks[0])
        if self._sub_rewards:  # multi-step episode: discounted sum of the intermediate metrics
            self._sub_rewards.append(r_metric)
            L = len(self._sub_rewards)
            r_metric = float(sum(0.7 ** (L - i - 1) * v for i, v in enumerate(self._sub_rewards)))
            self._sub_rewards = []
        reward = sign_reward(r_metric, self.reward_metrics[-1]) if self.reward_metrics else None
        self.reward_metrics.append(r_metric)
        probs_before = self.distribution.probs.clone()
        s = self.state_maker(self.state_maker.metric_vector(metrics, train_metrics), probs_before,
                             state.step / max(state.total_steps, 1))
        actions, info = self.trainer.step(s, reward, r_metric)
        self.distribution.update(self.policy.multipliers(actions))
        record = {"step": state.step, "epoch": state.epoch, "reward_metric": r_metric,
                  "reward": float("nan") if reward is None else reward, **info,
                  "actions": actions.tolist(), "probs": self.distribution.probs.tolist(),
                  **{f"val/{k}": v for k, v in metrics.items()}}
        self.history.append(record)
        state.extra["pads"] = record
        return record

    def distribution_trace(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps (U + 1,), probs (U + 1, K)): the initial distribution at step 0, then after each update.

        For the heat-map of the sampling distribution over training (normal and log scale).
        """
        initial = self.distribution.initial_weights(self.distribution.init, self.distribution.init_params)
        steps = np.array([0] + [r["step"] for r in self.history], dtype=np.int64)
        probs = np.array([(initial / initial.sum()).tolist()] + [r["probs"] for r in self.history], dtype=np.float64)
        return steps, probs

    def on_epoch_end(self, state: TrainState, record: dict) -> None:
        if self.history:
            last = self.history[-1]
            record.update({"pads/updates": len(self.history), "pads/reward_metric": last["reward_metric"],
                           "pads/entropy": last["entropy"]})

    # ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"distribution": self.distribution.state_dict(), "sampler": self.sampler.state_dict(),
                "trainer": self.trainer.state_dict(), "state_maker": self.state_maker.state_dict(),
                "counter": self._counter, "sub_rewards": list(self._sub_rewards),
                "reward_metrics": list(self.reward_metrics), "history": copy.deepcopy(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.distribution.load_state_dict(state["distribution"])
        self.sampler.load_state_dict(state["sampler"])
        self.trainer.load_state_dict(state["trainer"])
        self.state_maker.load_state_dict(state["state_maker"])
        self._counter, self._sub_rewards = int(state["counter"]), list(state["sub_rewards"])
        self.reward_metrics, self.history = list(state["reward_metrics"]), copy.deepcopy(state["history"])

    def __repr__(self) -> str:
        return (f"PADS(sample_every={self.sample_every}, {self.distribution!r}, mode={self.trainer.mode!r}, "
                f"state_size={self.state_maker.size}, reward_type={self.reward_type})")
