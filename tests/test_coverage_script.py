"""benchmarks/coverage.py: the adapter-coverage sweep runs on a few timm families and transformers
architectures and writes its JSON report (a smoke test of the harness; no coverage goal checked)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "coverage.py"


def test_tiny_config_kwargs_shrinks_consistently():
    spec = importlib.util.spec_from_file_location("unravel_coverage_script", SCRIPT)
    cov = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cov)
    d = {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": None, "num_hidden_layers": 40,
         "layer_types": ["sliding_attention"] * 3 + ["full_attention"] + ["sliding_attention"] * 36,
         "vocab_size": 50000, "pad_token_id": 1, "image_token_id": 49999, "use_cache": True,
         "mlp_only_layers": [0, 39], "sliding_window": None}
    out = cov.tiny_config_kwargs(d, causal=True)
    assert out["hidden_size"] == out["num_attention_heads"] * 16 and out["num_key_value_heads"] == 2
    assert out["layer_types"] == ["sliding_attention", "full_attention"] and out["num_hidden_layers"] == 2
    assert out["vocab_size"] == 128 and "pad_token_id" not in out  # small ids stay (position tables use them)
    assert cov.SEQ + 4 <= out["image_token_id"] < 128 and out["use_cache"] is False
    assert out["mlp_only_layers"] == [0] and "sliding_window" not in out
    assert cov.timm_size_key("convnext_atto") < cov.timm_size_key("convnext_base")
    assert cov.timm_size_key("convnext_atto") < cov.timm_size_key("test_convnext")  # test_ models last


@pytest.mark.slow
def test_coverage_script_limit_3(tmp_path):
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    out = tmp_path / "coverage.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--limit", "3", "--quiet", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"date", "versions", "settings", "residual_rule", "timm", "hf"} <= set(report)
    timm_part, hf = report["timm"], report["hf"]
    assert len(timm_part["rows"]) == 3
    keys = {"families", "residual_families", "found", "verified", "verified_pct", "goal_met"}
    assert keys <= set(timm_part["summary"])
    for row in timm_part["rows"]:
        assert {"family", "model", "status", "found", "verified", "units", "error"} <= set(row)
        assert row["status"] in {"verified", "partial", "unfaithful", "unsupported", "error", "build failed",
                                 "forward failed", "timeout"}
    assert {r["kind"] for r in hf["rows"]} == {"causal", "encoder"} and len(hf["rows"]) == 6
    for kind in ("causal", "encoder"):
        s = hf["summary"][kind]
        assert {"architectures", "built", "found", "verified", "verified_pct", "verified_pct_of_built"} <= set(s)
        assert s["architectures"] == 3
    assert "## timm families" in proc.stdout and "## transformers causal LMs" in proc.stdout
