"""PADS, policy-adapted negative sampling (Roth, Milbich, Ommer, CVPR 2020).

- :mod:`rankdml.pads.distribution`: the histogram over anchor-negative distances
  (:class:`SamplingDistribution`) and the miner that draws triplets with it (:class:`DistributionSampler`);
- :mod:`rankdml.pads.policy`: the state, the policy network, rewards, REINFORCE / PPO (:class:`PolicyTrainer`);
- :mod:`rankdml.pads.callback`: :class:`PADS`, the training-loop callback tying them together;
- :mod:`rankdml.pads.original`: the original's command line (flags, defaults, sample runs) in these terms.

Where this differs from the original code (Confusezius/CVPR2020_PADS), on purpose:

1. ``merge_out_of_range=False`` really gives out-of-range distances probability 0 (the original's
   ``--policy_merge_oobs`` is a no-op); the default True is what the original does.
2. Self-regularisation (``same_class_negatives``, ``anchor_as_positive``) are real switches; the
   original forces both on. Default on.
3. The value head regresses on the A2C target (reward scale) by default; ``value_target="metric"`` is
   the original's regression on the raw metric.
4. Validation embeddings are computed in eval mode; the intra-class distance leaves out single-item
   classes (NaN in the original); Recall@k and NMI follow :mod:`rankdml.metrics` (self removed by index,
   seeded k-means); the reward metric is computed even when it is not among the state metrics.
5. Draws use torch generators (the miner's on the embeddings' device, the policy's on the CPU), with
   their states in the checkpoint, instead of NumPy's global RNG.
6. A row whose candidates all have probability 0 falls back to uniform over them; anchors without a
   positive are skipped (the original would fail on both).
7. ``init="uniform"`` / ``"normal"`` with ``init_params`` work (the original's help text offers them,
   its code raises). Re-splitting train/val during training (``--policy_scramble_dataloaders``) is
   not supported.
"""
from rankdml.pads.callback import PADS
from rankdml.pads import original
from rankdml.pads.distribution import INITIAL_DISTRIBUTIONS, DistributionSampler, SamplingDistribution
from rankdml.pads.policy import (Policy, PolicyState, PolicyTrainer, class_distances, metric_names, ppo_loss,
                                 reinforce_loss, reward_metric, sign_reward, state_size)

__all__ = ["original", "PADS", "INITIAL_DISTRIBUTIONS", "SamplingDistribution", "DistributionSampler", "Policy", "PolicyState",
           "PolicyTrainer", "class_distances", "metric_names", "ppo_loss", "reinforce_loss", "reward_metric",
           "sign_reward", "state_size"]
