"""PADS's policy: the state, an MLP with one 3-way action head per bin and a value head, rewards, REINFORCE and PPO.

Every M training steps the learner is evaluated on a validation split, giving a metric vector
:math:`m_t` (Recall@k for each k, NMI, the mean intra-class and inter-class cosine distances, in the
order of ``state_metrics``) and a reward metric :math:`R_t`. The policy sees the state

.. math::
    s_t = \\big[m_{t-H+1}, \\dots, m_t,\\; \\bar m^{(2)}_t, \\bar m^{(8)}_t, \\bar m^{(16)}_t, \\bar m^{(32)}_t,\\; p_t,\\; t / T\\big]

(the last H metric vectors, their running means over the last {2, 8, 16, 32} updates, the current
sampling distribution, training progress), of size :math:`(H + 4)\\,|m| + K + 1`: 198 for
H = 20, |m| = 4 + 1 + 2, K = 29. For each bin k it picks an action :math:`a_k \\in \\{0, 1, 2\\}`
multiplying the bin's weight by :math:`v_{a_k}` (0.5, 1, 1.5 by default; 0.8, 1, 1.25 in every sample run).
The reward is the sign of the metric's change, :math:`r_t = \\mathrm{sign}(R_t - R_{t-1})`.

Policy gradient on the previous step's (state, actions), with advantage :math:`A`:

* REINFORCE: :math:`L = -\\frac1K \\sum_k A \\log \\pi(a_k | s_{t-1})`;
* PPO: :math:`L = -\\frac1K \\sum_k \\min(\\rho_k A, \\mathrm{clip}(\\rho_k, 1-\\epsilon, 1+\\epsilon) A)`,
  :math:`\\rho_k = \\pi(a_k|s_{t-1}) / \\pi_{old}(a_k|s_{t-1})`, the old policy refreshed every few updates;
* A2C baseline (default): :math:`A = r_t + \\gamma V(s_t) - V(s_{t-1})` (both V detached), plus
  :math:`\\tfrac12 (V(s_{t-1}) - y)^2` with :math:`y = r_t + \\gamma V(s_t)` (default) or the raw
  metric :math:`y = R_t` (the original's quirk, ``value_target="metric"``); without A2C
  :math:`A = r_t - \\mathrm{EMA}(r_1..r_{t-1})`.

Reference: Roth, Milbich, Ommer, CVPR 2020 (roth2020pads); code Confusezius/CVPR2020_PADS,
``PADS_utilities.py`` (``StateMaker``, ``Policy``, ``PADS.update``).
"""
from __future__ import annotations

import copy
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["STATE_METRICS", "metric_names", "state_size", "class_distances", "reward_metric", "sign_reward",
           "PolicyState", "Policy", "reinforce_loss", "ppo_loss", "PolicyTrainer"]

#: Metric groups the state can hold, and their number of values (recall: one per k).
STATE_METRICS = ("recall", "nmi", "dists")


def _check_state_metrics(state_metrics: Sequence[str]) -> tuple[str, ...]:
    state_metrics = tuple(state_metrics)
    bad = [m for m in state_metrics if m not in STATE_METRICS]
    if bad or not state_metrics or len(set(state_metrics)) != len(state_metrics):
        raise ValueError(f"state_metrics must be distinct names among {', '.join(STATE_METRICS)}, got {state_metrics!r}")
    return state_metrics


def metric_names(state_metrics: Sequence[str] = ("recall", "nmi", "dists"), ks: Sequence[int] = (1, 2, 4, 8)
                 ) -> list[str]:
    """Names of the metric vector's entries, in order: recall@k..., nmi, dists/intra, dists/inter."""
    names: list[str] = []
    for group in _check_state_metrics(state_metrics):
        if group == "recall":
            names += [f"recall@{k}" for k in ks]
        elif group == "nmi":
            names.append("nmi")
        else:
            names += ["dists/intra", "dists/inter"]
    return names


def state_size(*, num_bins: int = 29, ks: Sequence[int] = (1, 2, 4, 8),
               state_metrics: Sequence[str] = ("recall", "nmi", "dists"), metric_history: int = 10,
               running_averages: Sequence[int] = (2, 8, 16, 32), distribution_history: int = 1,
               include_train_metrics: bool = False) -> int:
    """Size of the state: (H + #running averages) |m| (doubled with train metrics) + K * distribution_history + 1.

    198 for the sample runs (H = 20, ks (1, 2, 4, 8), recall + nmi + dists, K = 29); 128 for the
    original's default H = 10.
    """
    if distribution_history == -1:
        distribution_history = metric_history
    per = (metric_history + len(running_averages)) * len(metric_names(state_metrics, ks))
    return per * (2 if include_train_metrics else 1) + num_bins * distribution_history + 1


def class_distances(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(mean intra-class, mean inter-class) cosine distance, the state's "dists" pair.

    intra = mean over classes c of  sum_{i != j in c} (1 - cos(x_i, x_j)) / (n_c^2 - n_c);
    inter = mean over pairs of distinct classes c != c' of 1 - cos(mu_c, mu_c'), mu_c the mean of
    class c's embeddings (as the original: the mean of the raw embeddings, then L2-normalised).
    Classes with a single item have no pair and are left out of the intra mean (the original gives NaN).
    Shapes: embeddings (N, D), labels (N,).
    """
    x = torch.as_tensor(embeddings).detach().to(torch.float64)
    y = torch.as_tensor(labels).detach().to(x.device)
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"class_distances: expected embeddings (N, D) and labels (N,), got {tuple(x.shape)}, "
                         f"{tuple(y.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("class_distances: embeddings contain NaN or inf; check the model's output")
    classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    if classes.numel() < 2:
        raise ValueError("class_distances: needs at least 2 classes for the inter-class distance")
    if not (counts >= 2).any():
        raise ValueError("class_distances: every class has a single item, so no intra-class distance exists")
    xn = F.normalize(x, dim=1)
    C, n = classes.numel(), counts.to(x.dtype)
    # sum_{i, j in c} cos(x_i, x_j) = |sum_{i in c} x^_i|^2, and the n_c terms i = j are 1: O(N D), no (N, N) matrix
    sums = x.new_zeros(C, x.shape[1]).index_add_(0, inverse, xn)  # (C, D) per-class sums of unit vectors
    off_diagonal_cos = (sums * sums).sum(1) - n  # (C,)
    valid = counts >= 2
    intra = (1.0 - off_diagonal_cos[valid] / (n[valid] ** 2 - n[valid])).mean()
    means = F.normalize(x.new_zeros(C, x.shape[1]).index_add_(0, inverse, x) / n[:, None], dim=1)  # (C, D)
    inter_d = 1.0 - means @ means.T  # (C, C) cosine distances of the class means
    inter = (inter_d.sum() - inter_d.diagonal().sum()) / (C * C - C)
    return float(intra), float(inter)


def reward_metric(metrics: Mapping[str, float], reward_type: int = 2, k: int = 1) -> float:
    """R_t: 0 -> NMI, 1 -> Recall@k (k = the first k value, 1 by default), 2 -> mean(Recall@k, NMI)."""
    if reward_type not in (0, 1, 2):
        raise ValueError(f"reward_type must be 0 (NMI), 1 (Recall@1) or 2 (both), got {reward_type!r}")
    need = {0: ["nmi"], 1: [f"recall@{k}"], 2: [f"recall@{k}", "nmi"]}[reward_type]
    missing = [n for n in need if n not in metrics]
    if missing:
        raise ValueError(f"reward_type {reward_type} needs {missing}, got metrics {sorted(metrics)}")
    return float(np.mean([metrics[n] for n in need]))


def sign_reward(current: float, previous: float) -> float:
    """r_t = sign(R_t - R_{t-1}) in {-1, 0, +1}."""
    return float(np.sign(current - previous))


class PolicyState:
    """Builds the policy's state from the validation metrics, keeping the history it needs.

    Args:
        num_bins: K. ks: the k of Recall@k. state_metrics: groups of the metric vector, in order
            (default ("recall", "nmi", "dists"), the original's default; the sample runs list
            recall, dists, nmi).
        metric_history: H, metric vectors in the state (``--policy_metric_history``, default 10; 20 in
            the sample runs). At the first update the history is filled with copies of the first vector.
        running_averages: window lengths of the running means (``--policy_run_avgs``, default (2, 8, 16, 32)).
        no_average: put the oldest vector of each window instead of its mean (``--policy_run_avgs_no_avg``).
        distribution_history: how many past distributions (``--policy_parameter_history``, default 1;
            -1 means H).
        include_train_metrics: the metric vector also holds the metrics of a training-data evaluation
            (``--policy_include_train_metrics``), doubling its size.

    Call ``state(metric_vector, probs, progress)`` once per policy update; returns (1, size) float32.
    """

    def __init__(self, *, num_bins: int = 29, ks: Sequence[int] = (1, 2, 4, 8),
                 state_metrics: Sequence[str] = ("recall", "nmi", "dists"), metric_history: int = 10,
                 running_averages: Sequence[int] = (2, 8, 16, 32), no_average: bool = False,
                 distribution_history: int = 1, include_train_metrics: bool = False):
        if metric_history < 1:
            raise ValueError(f"metric_history must be >= 1, got {metric_history}")
        if any(r < 1 for r in running_averages):
            raise ValueError(f"running_averages must be positive window lengths, got {tuple(running_averages)}")
        if distribution_history == -1:
            distribution_history = metric_history
        if distribution_history < 1:
            raise ValueError(f"distribution_history must be >= 1 (or -1 for metric_history), got {distribution_history}")
        self.num_bins, self.ks = int(num_bins), tuple(int(k) for k in ks)
        self.state_metrics = _check_state_metrics(state_metrics)
        self.metric_history, self.distribution_history = int(metric_history), int(distribution_history)
        self.running_averages, self.no_average = tuple(int(r) for r in running_averages), bool(no_average)
        self.include_train_metrics = bool(include_train_metrics)
        self.names = metric_names(self.state_metrics, self.ks)
        self.metric_size = len(self.names) * (2 if include_train_metrics else 1)
        self.size = state_size(num_bins=num_bins, ks=ks, state_metrics=state_metrics, metric_history=metric_history,
                               running_averages=running_averages, distribution_history=distribution_history,
                               include_train_metrics=include_train_metrics)
        self.reset()

    def reset(self) -> None:
        self.metrics: list[list[float]] = []  # the last max(H, 2) metric vectors
        self.windows: list[list[list[float]]] = [[] for _ in self.running_averages]
        self.distributions: list[list[float]] = []

    def metric_vector(self, metrics: Mapping[str, float], train_metrics: Mapping[str, float] | None = None
                      ) -> list[float]:
        """The metric vector m_t from a dict with keys `names` (and the train metrics' when included)."""
        sources = [metrics] + ([train_metrics] if self.include_train_metrics else [])
        if self.include_train_metrics and train_metrics is None:
            raise ValueError("PolicyState: include_train_metrics=True needs the train metrics too")
        out = []
        for src in sources:
            missing = [n for n in self.names if n not in src]
            if missing:
                raise ValueError(f"PolicyState: missing metrics {missing}; got {sorted(src)}")
            out += [float(src[n]) for n in self.names]
        return out

    def __call__(self, metric_vector: Sequence[float], probs: torch.Tensor | Sequence[float], progress: float
                 ) -> torch.Tensor:
        m = [float(v) for v in metric_vector]
        if len(m) != self.metric_size:
            raise ValueError(f"PolicyState: expected a metric vector of {self.metric_size} values, got {len(m)}")
        p = [float(v) for v in torch.as_tensor(probs).reshape(-1).tolist()]
        if len(p) != self.num_bins:
            raise ValueError(f"PolicyState: expected {self.num_bins} probabilities, got {len(p)}")
        keep = max(self.metric_history, 2)
        self.metrics.append(m)
        while len(self.metrics) < keep:  # the first update: fill the history with copies
            self.metrics.append(m)
        self.metrics = self.metrics[-keep:]
        for window, length in zip(self.windows, self.running_averages):
            window.append(m)
            del window[:-length]
        self.distributions.append(p)
        while len(self.distributions) < self.distribution_history:
            self.distributions.append(p)
        self.distributions = self.distributions[-self.distribution_history:]
        averages = [w[0] if self.no_average else np.mean(np.asarray(w), axis=0).tolist() for w in self.windows]
        parts = ([v for row in self.metrics[-self.metric_history:] for v in row]
                 + [v for row in averages for v in row]
                 + [v for row in self.distributions for v in row] + [float(progress)])
        return torch.tensor(parts, dtype=torch.float32)[None, :]

    def state_dict(self) -> dict:
        return copy.deepcopy({"metrics": self.metrics, "windows": self.windows, "distributions": self.distributions})

    def load_state_dict(self, state: dict) -> None:
        state = copy.deepcopy(state)
        self.metrics, self.windows, self.distributions = state["metrics"], state["windows"], state["distributions"]


class Policy(nn.Module):
    """MLP state -> hidden layers (ReLU) -> one softmax over the actions per bin, and a value head.

    Args:
        state_size: input size (see :class:`PolicyState`).
        num_bins: K, one action head per bin. Default 29.
        hidden: hidden layer sizes (``--policy_size``, default (128, 128)).
        action_values: multipliers the actions stand for (``--policy_action_values``, default
            (0.5, 1, 1.5); every sample run uses (0.8, 1, 1.25)).
        value_head: add the value head V(s) (A2C; the original has it iff A2C is on). Default True.
        init: weight initialisation (``--policy_winit_type``): "none" (PyTorch's default, the
            original's), "base" (normal(0, 0.01), zero bias) or "he_n" (Kaiming normal, zero bias).

    Forward: ``state (N, state_size) -> (value (N, 1) or None, logits (N, A, K))``; softmax over dim 1.
    """

    def __init__(self, state_size: int, num_bins: int = 29, hidden: Sequence[int] = (128, 128),
                 action_values: Sequence[float] = (0.5, 1.0, 1.5), *, value_head: bool = True, init: str = "none"):
        super().__init__()
        if len(action_values) < 2 or any(not v > 0 for v in action_values):
            raise ValueError(f"action_values must be at least two positive multipliers, got {tuple(action_values)}")
        if init not in ("none", "base", "he_n"):
            raise ValueError(f"init must be 'none', 'base' or 'he_n', got {init!r}")
        self.state_size, self.num_bins = int(state_size), int(num_bins)
        self.register_buffer("action_values", torch.tensor([float(v) for v in action_values], dtype=torch.float64))
        layers: list[nn.Module] = []
        width = self.state_size
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        self.body = nn.Sequential(*layers)
        self.actions = nn.Linear(width, len(action_values) * self.num_bins)
        self.value = nn.Linear(width, 1) if value_head else None
        for m in self.modules():
            if isinstance(m, nn.Linear) and init != "none":
                if init == "base":
                    nn.init.normal_(m.weight, 0.0, 0.01)
                else:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    @property
    def num_actions(self) -> int:
        return self.action_values.numel()

    def forward(self, state: torch.Tensor):
        if state.dim() != 2 or state.shape[1] != self.state_size:
            raise ValueError(f"Policy: expected a state of shape (N, {self.state_size}), got {tuple(state.shape)}")
        h = self.body(state)
        logits = self.actions(h).view(state.shape[0], self.num_actions, self.num_bins)  # (N, A, K)
        value = self.value(h) if self.value is not None else None  # (N, 1)
        return value, logits

    def action_probs(self, state: torch.Tensor) -> torch.Tensor:
        """(N, A, K) action probabilities, each bin's column summing to 1."""
        return F.softmax(self(state)[1], dim=1)

    @torch.no_grad()
    def act(self, state: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample one action per bin for a single state (1, S): (K,) int64 on the policy's device.

        NaN probabilities are set to 0 and the column renormalised (uniform if nothing is left), as the
        original does.
        """
        probs = self.action_probs(state)[0].T  # (K, A)
        probs = torch.nan_to_num(probs, nan=0.0)
        probs = torch.where(probs.sum(1, keepdim=True) > 0, probs, torch.ones_like(probs))
        return torch.multinomial(probs, 1, generator=generator)[:, 0]

    def multipliers(self, actions: torch.Tensor) -> torch.Tensor:
        """(K,) float64 multipliers v[a_k] of the chosen actions."""
        return self.action_values[actions.to(self.action_values.device)]


def _taken(log_probs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(N, A, K) log-probabilities, (K,) actions -> (N, K) log pi(a_k | s)."""
    idx = actions.reshape(1, 1, -1).expand(log_probs.shape[0], 1, -1)
    return log_probs.gather(1, idx)[:, 0, :]


def reinforce_loss(log_probs_taken: torch.Tensor, advantage: torch.Tensor | float) -> torch.Tensor:
    """L = -mean_k A log pi(a_k | s). `log_probs_taken`: (N, K); `advantage`: scalar or (N, 1)."""
    return -(advantage * log_probs_taken).mean()


def ppo_loss(log_probs_taken: torch.Tensor, old_log_probs_taken: torch.Tensor, advantage: torch.Tensor | float,
             clip: float = 0.2) -> torch.Tensor:
    """L = -mean_k min(rho_k A, clip(rho_k, 1 - clip, 1 + clip) A), rho_k = exp(log pi - log pi_old)."""
    ratio = torch.exp(log_probs_taken - old_log_probs_taken.detach())
    return -torch.min(ratio * advantage, ratio.clamp(1.0 - clip, 1.0 + clip) * advantage).mean()


class PolicyTrainer:
    """The learning side of PADS: REINFORCE or PPO on the policy, A2C or EMA baseline, old-policy refresh.

    Args:
        policy: the :class:`Policy`.
        mode: "ppo" (default, ``--policy_mode``) or "reinforce".
        lr: Adam learning rate (``--policy_lr``, default 0.01).
        use_a2c: value baseline (default True: the original's ``--policy_dont_use_a2c`` is off by
            default; its help text says the opposite). Needs a policy with a value head.
        ppo_clip: epsilon (``--policy_ppo_ratio``, default 0.2).
        old_policy_update: refresh pi_old every n updates (``--policy_old_update_iter``, default 3; 5 in
            the sample runs): after call c (counting from 0) when c % n == 0 and c > 1.
        discount: gamma of the A2C target r + gamma V(s_t) (``--policy_reward_update_w``, default 0.99).
        ema_alpha: EMA weight of the reward baseline without A2C (``--policy_baseline_ema_gamma``, 0.05).
        value_target: what the value head regresses on: "td" (default, the reward scale: the target
            r_t + gamma V(s_t) of the advantage) or "metric" (the original's quirk: the raw reward
            metric R_t, about 0.5-0.9, while the advantage uses the sign-reward scale).
        generator: for the action draws (on the policy's device).

    :meth:`step` is one policy call: update on the previous (state, actions) if any, then act.
    """

    def __init__(self, policy: Policy, *, mode: str = "ppo", lr: float = 0.01, use_a2c: bool = True,
                 ppo_clip: float = 0.2, old_policy_update: int = 3, discount: float = 0.99, ema_alpha: float = 0.05,
                 value_target: str = "td", generator: torch.Generator | None = None):
        if mode not in ("ppo", "reinforce"):
            raise ValueError(f"mode must be 'ppo' or 'reinforce', got {mode!r}")
        if value_target not in ("td", "metric"):
            raise ValueError(f"value_target must be 'td' (reward scale) or 'metric' (the original's), got {value_target!r}")
        if use_a2c and policy.value is None:
            raise ValueError("use_a2c=True needs a Policy with value_head=True")
        if old_policy_update < 1:
            raise ValueError(f"old_policy_update must be >= 1, got {old_policy_update}")
        self.policy, self.mode, self.use_a2c = policy, mode, bool(use_a2c)
        self.ppo_clip, self.old_policy_update = float(ppo_clip), int(old_policy_update)
        self.discount, self.ema_alpha, self.value_target = float(discount), float(ema_alpha), value_target
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
        self.old_policy = copy.deepcopy(policy) if mode == "ppo" else None
        if self.old_policy is not None:
            self.old_policy.requires_grad_(False)
        self.generator = generator
        self.calls = 0
        self.rewards: list[float] = []  # sign rewards seen (the EMA baseline's input)
        self.prev_state: torch.Tensor | None = None
        self.prev_actions: torch.Tensor | None = None

    def _ema(self, values: Sequence[float]) -> float:
        if not values:
            return 0.0
        ema = values[0]
        for v in values[1:]:
            ema = (1.0 - self.ema_alpha) * ema + self.ema_alpha * v
        return float(ema)

    def update(self, prev_state: torch.Tensor, prev_actions: torch.Tensor, state: torch.Tensor, reward: float,
               metric: float) -> dict:
        """One gradient step for (prev_state, prev_actions) given the sign `reward` and the raw `metric` R_t.

        Shapes: prev_state, state (1, S); prev_actions (K,) action indices.
        """
        K, A = self.policy.num_bins, self.policy.num_actions
        if prev_actions.shape != (K,) or prev_actions.dtype != torch.int64 or not (
                (prev_actions >= 0) & (prev_actions < A)).all():
            raise ValueError(f"PolicyTrainer: expected {K} action indices in 0..{A - 1} (int64), got "
                             f"{prev_actions.dtype} of shape {tuple(prev_actions.shape)}")
        value, logits = self.policy(prev_state)
        log_taken = _taken(F.log_softmax(logits, dim=1), prev_actions)  # (1, K)
        if self.use_a2c:
            with torch.no_grad():
                target = reward + self.discount * self.policy(state)[0]  # (1, 1)
            advantage = target - value.detach()
        else:
            advantage = torch.tensor(reward - self._ema(self.rewards), dtype=log_taken.dtype, device=log_taken.device)
            self.rewards.append(reward)
        if self.mode == "ppo":
            with torch.no_grad():
                old_taken = _taken(F.log_softmax(self.old_policy(prev_state)[1], dim=1), prev_actions)
            loss = ppo_loss(log_taken, old_taken, advantage, self.ppo_clip)
        else:
            loss = reinforce_loss(log_taken, advantage)
        value_loss = None
        if self.use_a2c:
            y = target if self.value_target == "td" else torch.full_like(value, float(metric))
            value_loss = 0.5 * ((value - y) ** 2).mean()
            loss = loss + value_loss
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach()), "advantage": float(advantage.detach().reshape(-1)[0]),
                "value": float(value.detach()) if value is not None else float("nan"),
                "value_loss": float(value_loss.detach()) if value_loss is not None else float("nan")}

    def step(self, state: torch.Tensor, reward: float | None, metric: float) -> tuple[torch.Tensor, dict]:
        """Update on the previous decision (skipped on the first call, or when `reward` is None), then act.

        Returns (actions (K,), info dict). The old policy is refreshed after acting, as the original.
        """
        info: dict = {}
        if self.prev_state is not None and reward is not None:
            info = self.update(self.prev_state, self.prev_actions, state, reward, metric)
        actions = self.policy.act(state, self.generator)
        with torch.no_grad():
            probs = self.policy.action_probs(state)[0]  # (A, K)
            info["entropy"] = float(-(probs * torch.log(probs.clamp_min(1e-12))).sum(0).mean())
        self.prev_state, self.prev_actions = state.detach().clone(), actions.clone()
        if self.old_policy is not None and self.calls % self.old_policy_update == 0 and self.calls > 1:
            self.old_policy.load_state_dict(self.policy.state_dict())
        self.calls += 1
        return actions, info

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "old_policy": self.old_policy.state_dict() if self.old_policy is not None else None,
                "calls": self.calls, "rewards": list(self.rewards),
                "prev_state": self.prev_state, "prev_actions": self.prev_actions,
                "generator": self.generator.get_state() if self.generator is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.old_policy is not None:
            self.old_policy.load_state_dict(state["old_policy"])
        self.calls, self.rewards = int(state["calls"]), list(state["rewards"])
        dev = next(self.policy.parameters()).device
        self.prev_state = None if state["prev_state"] is None else state["prev_state"].to(dev)
        self.prev_actions = None if state["prev_actions"] is None else state["prev_actions"].to(dev)
        if self.generator is not None and state["generator"] is not None:
            self.generator.set_state(state["generator"])
