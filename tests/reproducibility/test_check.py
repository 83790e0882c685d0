"""The reproduction check: stored metrics against a new run, within per-metric tolerances."""
import json

import pytest

import rankdml
from rankdml.book import check_reproduction, compare_metrics, reproduction_table


def test_compare_metrics_verdicts():
    stored = {"model": {"recall@1": 0.50, "map@r": 0.20, "nmi": 0.80}}
    now = {"model": {"recall@1": 0.52, "map@r": 0.25}}
    rows = {r["metric"]: r for r in compare_metrics(stored, now, {"recall@1": 0.03, "map@r": 0.01})}
    assert rows["recall@1"]["verdict"] == "ok" and rows["recall@1"]["difference"] == pytest.approx(0.02)
    assert rows["map@r"]["verdict"] == "DIFFERS"
    assert rows["nmi"]["verdict"] == "missing"
    table = reproduction_table(list(rows.values()))
    assert "1 of 3 metrics within tolerance; 2 outside it" in table


def test_metric_without_tolerance_must_match_exactly():
    rows = compare_metrics({"a": {"x": 0.5}}, {"a": {"x": 0.5001}}, {})
    assert rows[0]["verdict"] == "DIFFERS"


@pytest.fixture
def results_dir(tmp_path):
    (tmp_path / "09_toy.json").write_text(json.dumps({"parameters": {"seed": 0, "epochs": 3},
                                                      "metrics": {"net": {"recall@1": 0.4}}}))
    (tmp_path / "tolerances.json").write_text(json.dumps({"chapters": {"09_toy": {"recall@1": 0.02}}}))
    return tmp_path


def test_check_reproduction_is_silent_where_bits_are_promised(results_dir, capsys, monkeypatch):
    # Whether this process is in the mode depends on what ran before in it (the subprocess probes of
    # test_cpu_independence.py check the mode itself): stand in for an x86-64 CPU in the mode.
    monkeypatch.setattr(rankdml.reproducible, "bitwise_platform", lambda device="cpu": True)
    assert check_reproduction("09_toy", {"net": {"recall@1": 0.9}}, "cpu", results_dir=results_dir) is None
    assert capsys.readouterr().out == ""


def test_check_reproduction_compares_on_other_devices(results_dir, capsys):
    rows = check_reproduction("09_toy", {"net": {"recall@1": 0.41}}, "cuda", {"seed": 0, "epochs": 3},
                              results_dir=results_dir)
    assert [r["verdict"] for r in rows] == ["ok"]
    assert "1 of 1 metrics within tolerance" in capsys.readouterr().out
    rows = check_reproduction("09_toy", {"net": {"recall@1": 0.5}}, "cuda", results_dir=results_dir)
    assert [r["verdict"] for r in rows] == ["DIFFERS"]


def test_check_reproduction_refuses_other_parameters(results_dir, capsys):
    assert check_reproduction("09_toy", {"net": {"recall@1": 0.5}}, "cuda", {"seed": 0, "epochs": 40},
                              results_dir=results_dir) is None
    assert "epochs differ" in capsys.readouterr().out


def test_unknown_chapter_has_a_clear_error(results_dir):
    with pytest.raises(FileNotFoundError, match="no stored metrics"):
        check_reproduction("10_missing", {}, "cuda", results_dir=results_dir)


def test_chapter_without_measured_tolerances_is_compared_exactly(results_dir, capsys):
    (results_dir / "08_new.json").write_text(json.dumps({"parameters": {}, "metrics": {"net": {"nmi": 0.7}}}))
    rows = check_reproduction("08_new", {"net": {"nmi": 0.7001}}, "cuda", results_dir=results_dir)
    assert [r["verdict"] for r in rows] == ["DIFFERS"]
    assert "no tolerances measured for 08_new yet" in capsys.readouterr().out


def test_rows_named_after_a_chosen_epoch_line_up():
    from rankdml.book import row_key

    assert row_key("classifier (epoch 19, chosen on val)") == "classifier (chosen on val)"
    assert row_key("classifier, best test epoch (optimistic)") == "classifier, best test epoch (optimistic)"
    rows = compare_metrics({"classifier (epoch 19, chosen on val)": {"map@r": 0.2}},
                           {"classifier (epoch 20, chosen on val)": {"map@r": 0.21}}, {"map@r": 0.02})
    assert [r["verdict"] for r in rows] == ["ok"]
