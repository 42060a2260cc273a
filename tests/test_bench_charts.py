"""bench/charts.py on a small synthetic replay results file."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg

from bench.charts import level_table, main


def synthetic_records() -> list[dict]:
    records = []
    for level, proxy_tier, proxy_tokens in (("S0", "cold", 200), ("S1", "reuse", 0), ("S3", "guided", 120)):
        for i in range(4):
            records.append(
                {"pass": "direct", "level": level, "correct": i < 3, "completion_tokens": 200, "latency_s": 5.0}
            )
            records.append(
                {
                    "pass": "proxy",
                    "level": level,
                    "correct": i < 2 if level == "S3" else i < 3,
                    "completion_tokens": proxy_tokens,
                    "latency": 0.01 if proxy_tier == "reuse" else 3.0,  # either key is read
                    "tier": proxy_tier,
                }
            )
    records.append({"pass": "proxy", "level": "S4", "correct": False, "completion_tokens": None, "error": "timeout"})
    return records


def test_level_table_means() -> None:
    table = level_table(synthetic_records())
    assert list(table) == ["S0", "S1", "S3", "S4"]
    assert table["S1"]["direct"].mean_tokens == 200 and table["S1"]["proxy"].mean_tokens == 0
    assert table["S1"]["proxy"].mean_latency == 0.01 and table["S1"]["proxy"].tiers == {"reuse": 4}
    assert table["S3"]["proxy"].accuracy == 0.5 and table["S3"]["direct"].accuracy == 0.75
    assert table["S4"]["proxy"].mean_tokens is None and table["S4"]["proxy"].accuracy == 0.0


def test_charts_are_written(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"config": {}, "records": synthetic_records()}))
    assert main([str(results), "--out", str(tmp_path / "img"), "--prefix", "t"]) == 0
    names = sorted(p.name for p in (tmp_path / "img").iterdir())
    assert names == ["t_accuracy.png", "t_latency.png", "t_summary.png", "t_tiers.png", "t_tokens.png"]
    for path in (tmp_path / "img").iterdir():
        image = mpimg.imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 600
        assert image[..., :3].std() > 0.05  # something was drawn, not a blank canvas
    assert "t_tokens.png" in capsys.readouterr().out

    bare_list = tmp_path / "list.json"
    bare_list.write_text(json.dumps(synthetic_records()))
    assert main([str(bare_list), "--out", str(tmp_path / "img2")]) == 0
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"records": []}))
    assert main([str(empty), "--out", str(tmp_path / "img3")]) == 2
