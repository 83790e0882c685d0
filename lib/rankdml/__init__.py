"""rankdml: ranking-based deep metric learning.

The library behind the book: data sets and samplers (`rankdml.data`), embedding networks
(`rankdml.models`), losses and miners (`rankdml.losses`, `rankdml.mining`), retrieval metrics
(`rankdml.metrics`) and one training loop (`rankdml.train.fit`).
"""
# The one place the version is written: pyproject.toml reads it (setuptools `dynamic`, statically).
__version__ = "0.1.0"

from rankdml import reproducible

if reproducible.requested():
    # Before torch is imported: MKL and ATen read their settings once, at their first computation.
    reproducible.apply_environment()

from rankdml.runtime import resolve_device, seed_everything  # noqa: E402  (after the environment is set)
from rankdml import data, losses, metrics, mining, models, train  # noqa: E402  (sub-packages are the API)
from rankdml.data import load_dataset
from rankdml.losses import make_loss
from rankdml.models import make_model
from rankdml.train import fit

__all__ = ["data", "losses", "metrics", "mining", "models", "train", "load_dataset", "make_loss", "make_model", "fit",
           "seed_everything", "resolve_device", "reproducible", "__version__"]
