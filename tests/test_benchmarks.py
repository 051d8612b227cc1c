import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_harness_quick(tmp_path):
    """--quick checks the harness only: every case runs and writes its figures; no goals."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"protocol", "overhead", "lesion", "memory", "tracker", "scaling",
                                      "transformers"}
    r = report["results"]
    assert r["protocol"]["ratio_protocol_over_stacked"] > 0 and r["overhead"]["exact_s"] > 0
    assert r["lesion"]["delete_each_speedup"] > 0 and r["memory"]["exact_mib"] >= 0
    assert len(r["scaling"]["rows"]) == 2 and report["versions"]["torch"]
    assert "== protocol" in proc.stdout
    for name in ("vit", "gpt2"):
        assert r["transformers"][name]["units"] == 4 and r["transformers"][name]["delete_each_speedup"] > 0


@pytest.mark.slow
def test_prune_benchmark_quick(tmp_path):
    """benchmarks/prune.py --quick: both cases run, the greedy loop agrees with select()."""
    out = tmp_path / "prune.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "prune.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())["results"]
    for name in ("resnet", "gpt2"):
        assert r["greedy"][name]["same_choice"] and r["greedy"][name]["speedup"] > 0
        rows = r["speedup"][name]["rows"]
        assert rows[0]["speedup"] == 1 and rows[-1]["share_params_removed"] > 0
