"""PADS, policy-adapted negative sampling (Roth, Milbich, Ommer, CVPR 2020).

- :mod:`rankdml.pads.distribution`: the histogram over anchor-negative distances
  (:class:`SamplingDistribution`) and the miner that draws triplets with it (:class:`DistributionSampler`);
- :mod:`rankdml.pads.policy`: the state, the policy network, rewards, REINFORCE / PPO (:class:`PolicyTrainer`);
- :mod:`rankdml.pads.callback`: :class:`PADS`, the training-loop callback tying them together;
- :mod:`rankdml.pads.original`: the original's command line (flags, defaults, sample runs) in these terms.
"""
from rankdml.pads.callback import PADS
from rankdml.pads import original
from rankdml.pads.distribution import INITIAL_DISTRIBUTIONS, DistributionSampler, SamplingDistribution
from rankdml.pads.policy import (Policy, PolicyState, PolicyTrainer, class_distances, metric_names, ppo_loss,
                                 reinforce_loss, reward_metric, sign_reward, state_size)

__all__ = ["original", "PADS", "INITIAL_DISTRIBUTIONS", "SamplingDistribution", "DistributionSampler", "Policy", "PolicyState",
           "PolicyTrainer", "class_distances", "metric_names", "ppo_loss", "reinforce_loss", "reward_metric",
           "sign_reward", "state_size"]
