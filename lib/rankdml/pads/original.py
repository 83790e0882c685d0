"""The original PADS command line (Confusezius/CVPR2020_PADS ``main.py`` + ``PADS_utilities.py``) in our terms.

:data:`FLAGS` maps each flag of the original to the :class:`rankdml.pads.PADS` argument (or to the
learner-side setting) that plays its part; :data:`DEFAULTS` gives the original's default of each;
:data:`SAMPLE_RUNS` the settings of its ``SAMPLE_RUNS.sh`` per data set; :func:`pads_arguments`
turns a dict of original flags into keyword arguments of :class:`~rankdml.pads.PADS`.
"""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["FLAGS", "DEFAULTS", "LEARNER_FLAGS", "SAMPLE_RUNS", "pads_arguments"]

#: original flag -> PADS argument. Boolean flags that mean the opposite are handled by `pads_arguments`.
FLAGS: dict[str, str] = {
    "policy_sample_freq": "sample_every", "policy_n_support": "n_support",
    "policy_support_limit": "support_limit", "policy_init_distr": "init_distribution",
    "policy_init_params": "init_params", "policy_merge_oobs": "merge_out_of_range",
    "policy_include_pos": "same_class_negatives", "policy_include_same": "anchor_as_positive",
    "policy_lr": "policy_lr", "policy_action_values": "action_values", "policy_size": "policy_size",
    "policy_winit_type": "policy_init", "policy_dont_use_a2c": "use_a2c",
    "policy_baseline_ema_gamma": "ema_alpha", "policy_reward_update_w": "discount",
    "policy_ppo_ratio": "ppo_clip", "policy_mode": "mode", "policy_old_update_iter": "old_policy_update",
    "policy_run_avgs": "running_averages", "policy_run_avgs_no_avg": "no_average",
    "policy_state_metrics": "state_metrics", "policy_metric_history": "metric_history",
    "policy_reward_type": "reward_type", "policy_parameter_history": "distribution_history",
    "policy_training_delay": "training_delay", "policy_sup_metric_collect": "sub_episodes",
    "policy_include_train_metrics": "include_train_metrics",
    "policy_scramble_dataloaders": "scramble_dataloaders", "policy_scramble_freq": "scramble_every",
    "k_vals": "ks",
}

#: The original's defaults (argparse), for the flags of `FLAGS` and the self-regularisation switch.
DEFAULTS: dict[str, Any] = {
    "policy_sample_freq": 30, "policy_n_support": 30, "policy_support_limit": (0.1, 1.4),
    "policy_init_distr": "uniform_low", "policy_init_params": (0.5, 0.04), "policy_merge_oobs": False,
    "policy_include_pos": False, "policy_include_same": False, "policy_no_self_reg": False,
    "policy_lr": 0.01, "policy_action_values": (0.5, 1.0, 1.5), "policy_size": (128, 128),
    "policy_winit_type": "none", "policy_dont_use_a2c": False, "policy_baseline_ema_gamma": 0.05,
    "policy_reward_update_w": 0.99, "policy_ppo_ratio": 0.2, "policy_mode": "ppo",
    "policy_old_update_iter": 3, "policy_run_avgs": (2, 8, 16, 32), "policy_run_avgs_no_avg": False,
    "policy_state_metrics": ("recall", "nmi", "dists"), "policy_metric_history": 10, "policy_reward_type": 2,
    "policy_parameter_history": 1, "policy_training_delay": 0, "policy_sup_metric_collect": -1,
    "policy_include_train_metrics": False, "policy_scramble_dataloaders": False,
    "policy_scramble_freq": 100000000, "k_vals": (1, 2, 4, 8),
}

#: Learner-side flags of main.py (not PADS arguments): flag -> (where it goes, original default).
LEARNER_FLAGS: dict[str, tuple[str, Any]] = {
    "lr": ("optimiser lr", 1e-5), "decay": ("optimiser weight decay", 4e-4), "bs": ("batch size", 112),
    "samples_per_class": ("PKSampler samples_per_class", 4), "n_epochs": ("fit epochs", 150),
    "tau": ("MultiStepLR milestones", (150,)), "gamma": ("MultiStepLR gamma", 0.3),
    "margin": ("MarginLoss margin", 0.2), "beta": ("MarginLoss beta", 1.2),
    "beta_lr": ("param_groups beta_lr", 5e-4), "nu": ("MarginLoss nu (no effect in the original)", 0.0),
    "beta_constant": ("MarginLoss learn_beta=False", False), "embed_dim": ("embedding size", 128),
    "seed": ("the run's seed", 1), "train_val_split": ("holdout_split train_fraction", 0.85),
    "train_val_split_by_class": ("holdout_split by='class'", False),
}

_COMMON = {"policy_state_metrics": ("recall", "dists", "nmi"), "policy_mode": "ppo", "policy_metric_history": 20,
           "policy_action_values": (0.8, 1.0, 1.25), "policy_old_update_iter": 5, "policy_init_distr": "uniform_low",
           "policy_n_support": 30, "policy_support_limit": (0.1, 1.4)}

#: SAMPLE_RUNS.sh of the original (every run: --loss marginloss, bs 112 by default).
SAMPLE_RUNS: dict[str, dict[str, Any]] = {
    "cub200": {**_COMMON, "seed": 3, "n_epochs": 300, "beta_lr": 0.001, "beta": 0.6, "tau": (150,),
               "train_val_split": 0.85, "samples_per_class": 2, "policy_sample_freq": 30, "policy_reward_type": 1},
    "cars196": {**_COMMON, "seed": 0, "n_epochs": 300, "beta_lr": 0.0005, "beta": 0.6, "tau": (140,),
                "train_val_split": 0.9, "samples_per_class": 4, "policy_sample_freq": 30, "policy_reward_type": 2},
    "sop": {**_COMMON, "seed": 0, "n_epochs": 120, "beta_lr": 0.001, "beta": 1.2, "tau": (80,),
            "train_val_split": 0.9, "samples_per_class": 2, "policy_sample_freq": 60, "policy_reward_type": 2,
            "k_vals": (1, 10, 100, 1000)},
}


def pads_arguments(flags: Mapping[str, Any], *, as_the_original_runs: bool = True) -> dict[str, Any]:
    """Keyword arguments of :class:`~rankdml.pads.PADS` for a dict of the original's flags (names without ``--``).

    Flags not given take the original's default. Learner-side flags (:data:`LEARNER_FLAGS`) are ignored.
    With `as_the_original_runs` (default) the result reproduces what the original *does*:
    self-regularisation forced on unless ``policy_no_self_reg`` (whatever ``policy_include_pos`` /
    ``policy_include_same`` say) and out-of-range distances always merged (``policy_merge_oobs`` is a
    no-op there). With False those flags are taken at their word (the fixed behaviour).
    """
    unknown = [f for f in flags if f not in DEFAULTS and f not in LEARNER_FLAGS]
    if unknown:
        raise ValueError(f"pads_arguments: unknown flags {unknown}; known: {', '.join(sorted(DEFAULTS))}")
    f = {**DEFAULTS, **flags}
    out = {FLAGS[name]: f[name] for name in FLAGS}
    out["use_a2c"] = not f["policy_dont_use_a2c"]
    for key in ("support_limit", "init_params", "action_values", "policy_size", "running_averages",
                "state_metrics", "ks"):
        out[key] = tuple(out[key])
    if as_the_original_runs:
        self_reg = not f["policy_no_self_reg"]
        out["same_class_negatives"] = out["anchor_as_positive"] = self_reg
        out["merge_out_of_range"] = True
    else:
        out["merge_out_of_range"] = bool(f["policy_merge_oobs"])
        if f["policy_no_self_reg"]:
            out["same_class_negatives"] = out["anchor_as_positive"] = False
    return out
