"""The paper's numbers, recorded runs over seeds, and the Markdown tables every chapter shows."""

from __future__ import annotations

import pytest

from heatup_lib import results as T


def test_results_table_and_markdown():
    run = {"dataset": "cars196", "row": "hbn", "preset": "paper", "path": "r1",
           "metrics": {"nmi": 0.5, "recall@1": 0.6, "recall@2": 0.7, "recall@4": 0.8},
           "environment": {"device_name": "NVIDIA H200", "date": "2026-11-28T20:00:00+00:00",
                           "git_commit": "0123456789abcdef", "world_size": 1},
           "data": {"dataset": "cars196", "train": {"num_images": 8054, "images_sha256": "abcdef0123"}}}
    table = T.results_table([run], "cars196")
    assert [r["row"] for r in table] == ["SM", "LN", "BN", "HLN", "HBN", "HBN", "ProxyNCA"]
    assert table[4] == {"row": "HBN", "source": "paper", "seeds": [], "nmi": [68.10], "recall@1": [74.70],
                        "recall@2": [83.90], "recall@4": [89.77]}
    assert table[5]["recall@1"] == [pytest.approx(60.0)] and table[5]["nmi"] == [pytest.approx(50.0)]
    label = table[5]["source"]
    assert "NVIDIA H200" in label and "2026-11-28" in label and "0123456789ab" in label and "abcdef01" in label
    md = T.results_markdown(table)
    assert md.splitlines()[0] == "| row | source | seeds | NMI | R@1 | R@2 | R@4 |"
    assert "| HBN | paper | - | 68.10 | 74.70 | 83.90 | 89.77 |" in md
    assert "| HBN | [a] | 1 | 50.00 | 60.00 | 70.00 | 80.00 |" in md
    assert md.count(label) == 1 and md.endswith(f"[a] {label}")  # the source is said once, below the table
    assert T.table_metrics("sop") == ("nmi", "recall@1", "recall@10", "recall@100")
    assert T.results_table([], "sop", include_paper=False) == []
    assert T.results_markdown([]) == "_No results to show._"
    # The paper's HBN row is the best of its table on every dataset (SPEC §3) -- the data says so too.
    for ds, rows in T.PAPER_RESULTS.items():
        assert max(rows, key=lambda r: rows[r]["recall@1"]) == "hbn", ds




def test_seeds_of_one_source_are_one_entry_with_mean_and_sd():
    def run(seed, r1):
        return {"dataset": "cub200", "row": "ln", "preset": "default", "path": f"r{seed}",
                "settings": {"train": {"seed": seed}}, "metrics": {"recall@1": r1},
                "environment": {"device_name": "cpu", "date": "2026-12-01", "git_commit": "abc"}, "data": {}}
    table = T.results_table([run(0, 0.30), run(1, 0.40), run(2, 0.35)], "cub200", metrics=["recall@1"],
                            include_paper=False)
    assert len(table) == 1 and table[0]["seeds"] == [0, 1, 2]
    assert table[0]["recall@1"] == pytest.approx([30.0, 40.0, 35.0])
    md = T.results_markdown(table)
    assert "| LN | [a] | 3 | 35.00 ± 5.00 |" in md  # sample sd of 30, 40, 35 is 5


def test_markdown_table_and_mean_sd():
    text = T.markdown_table(["a", "b"], [["x", 1], ["y", 2]], [False, True])
    assert text.splitlines() == ["| a | b |", "|---|---:|", "| x | 1 |", "| y | 2 |"]
    with pytest.raises(ValueError, match="a row has 1 cells for 2 columns"):
        T.markdown_table(["a", "b"], [["x"]])
    assert T.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    assert T.mean_sd([4.0]) == (4.0, 0.0, 1)
    assert T.mean_sd([]) [2] == 0 and T.format_mean_sd([]) == "-"
    assert T.format_mean_sd([0.1, 0.3], digits=1, scale=100) == "20.0 ± 14.1"


def test_mean_ci_is_students_t_interval_worked_by_hand():
    import math

    # Student's t quantiles in closed form: 2 and 4 degrees of freedom (p the upper tail's CDF)
    def t2(p):
        return (2 * p - 1) * math.sqrt(2 / (1 - (2 * p - 1) ** 2))

    def t4(p):
        a = 4 * p * (1 - p)
        return 2 * math.sqrt(math.cos(math.acos(math.sqrt(a)) / 3) / math.sqrt(a) - 1)

    assert t2(0.975) == pytest.approx(4.3027, abs=1e-4) and t4(0.95) == pytest.approx(2.1318, abs=1e-4)  # tables
    # [1, 2, 3]: mean 2, sd 1, half-width t(0.975, 2) / sqrt(3)
    m, half, n = T.mean_ci([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3) and half == pytest.approx(t2(0.975) / 3 ** 0.5, rel=1e-9)
    # five values at 90%: t(0.95, 4)
    values = [0.5, 0.7, 0.1, 0.9, 0.3]
    m, half, n = T.mean_ci(values, level=0.90)
    sd = (sum((v - 0.5) ** 2 for v in values) / 4) ** 0.5
    assert m == pytest.approx(0.5) and half == pytest.approx(t4(0.95) * sd / 5 ** 0.5, rel=1e-9)
    m, half, n = T.mean_ci([4.0, float("nan")])  # one finite value: no interval
    assert (m, n) == (4.0, 1) and half != half
    with pytest.raises(ValueError, match="level must be in \\(0, 1\\), got 95"):
        T.mean_ci([1.0, 2.0], level=95)
