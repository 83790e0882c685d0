"""The leave-one-out retrieval metrics as computed before the rank-based search (issue 17).

Used only by the tests, as the reference the new search must match to the last digit: one exact
top-K_max search (`nearest_neighbours`, ties by the lower index) and the metric functions on the
neighbours' labels.
"""
from __future__ import annotations

import numpy as np

from rankdml import metrics as M


def topk_retrieval_metrics(embeddings, labels, ks, backend: str = "torch") -> dict[str, float]:
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    lab = np.asarray(labels).astype(np.int64)
    r = M.num_relevant(lab)
    _, idx = M.nearest_neighbours(emb, max(max(ks), int(r.max())), backend=backend)
    return M._ranking_metrics(lab[idx], lab, r, tuple(ks))
