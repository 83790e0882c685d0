"""tools/derive_tolerances.py: seed runs are checked, kept in book/results/seeds/, and turned into tolerances."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tool(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("derive_tolerances", ROOT / "tools" / "derive_tolerances.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(module, "RESULTS", results)
    monkeypatch.setattr(module, "SEEDS", results / "seeds")
    monkeypatch.setattr(module, "ROOT", tmp_path)
    return module


def write(path, seed, r1, epochs=5, row="net (epoch 3, chosen on val)"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"parameters": {"seed": seed, "epochs": epochs},
                                "metrics": {row: {"recall@1": r1, "nmi": 0.5}}}))


def test_three_seeds_give_four_sd_and_old_entries_are_kept(tool, tmp_path):
    write(tool.RESULTS / "09_toy.json", 0, 0.40)
    write(tool.RESULTS / "08_other.json", 0, 0.30)
    (tool.RESULTS / "tolerances.json").write_text(json.dumps({
        "chapters": {"08_other": {"recall@1": 0.05}}, "seeds": {"08_other": [0, 1, 2]},
        "not_measured": {"09_toy": "pending"}}))
    for seed, r1, row in [(1, 0.43, "net (epoch 4, chosen on val)"), (2, 0.46, "net (epoch 3, chosen on val)")]:
        write(tmp_path / f"runs/s{seed}/09_toy/metrics.json", seed, r1, row=row)
    tool.main([str(tmp_path / "runs/s1"), str(tmp_path / "runs/s2")])
    out = json.loads((tool.RESULTS / "tolerances.json").read_text())
    expected = np.ceil(4 * np.std([0.40, 0.43, 0.46], ddof=1) * 1e4) / 1e4
    assert out["chapters"]["09_toy"]["recall@1"] == pytest.approx(expected)
    assert out["chapters"]["09_toy"]["nmi"] == 0.0
    assert out["chapters"]["08_other"] == {"recall@1": 0.05}  # not re-derived: kept
    assert out["seeds"]["09_toy"] == [0, 1, 2] and "not_measured" not in out
    assert sorted(p.name for p in (tool.SEEDS / "09_toy").iterdir()) == ["seed1.json", "seed2.json"]
    tool.main([])  # from the committed seeds alone: the same file
    assert json.loads((tool.RESULTS / "tolerances.json").read_text()) == out


def test_a_run_with_other_parameters_is_refused(tool, tmp_path):
    write(tool.RESULTS / "09_toy.json", 0, 0.40)
    write(tmp_path / "runs/s1/09_toy/metrics.json", 1, 0.43, epochs=20)
    with pytest.raises(SystemExit, match="epochs differ"):
        tool.main([str(tmp_path / "runs/s1")])


def test_too_few_seeds_keep_the_pending_reason(tool, tmp_path):
    write(tool.RESULTS / "09_toy.json", 0, 0.40)
    (tool.RESULTS / "tolerances.json").write_text(json.dumps({"chapters": {}, "not_measured": {"09_toy": "pending"}}))
    write(tmp_path / "runs/s1/09_toy/metrics.json", 1, 0.43)
    tool.main([str(tmp_path / "runs/s1")])
    out = json.loads((tool.RESULTS / "tolerances.json").read_text())
    assert out["not_measured"] == {"09_toy": "pending"} and "09_toy" not in out["chapters"]
