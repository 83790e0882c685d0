"""Package data: the embedded data sets (``emoji32.npz``, ``fashion28.npz``), their licences
(``EMOJI_LICENSE.md``, ``FASHION_LICENSE.md``) and the benchmarks' manifest (``benchmarks.json``).

A package of its own so that `importlib.resources.files("rankdml.data.files")` finds the files in
every kind of install. They are written by the build scripts in the repository's ``data/`` folder.
"""
