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


def _script():
    spec = importlib.util.spec_from_file_location("unravel_coverage_script", SCRIPT)
    cov = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cov)
    return cov


def test_timm_rows_say_whether_attribution_runs_exactly():
    """A chain (a ResNet) is decomposed exactly in float64; a DLA, whose aggregation nodes read
    earlier blocks, is routed and verified but refused by attribution, and the row says why."""
    import timm

    cov = _script()
    torch = cov.torch
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    chain = cov.timm_attribution(timm.create_model("resnet10t", pretrained=False).eval(), x)
    assert chain["attribution"] == "exact" and chain["exact_dtype"] == "float64" and chain["exact_rel_err"] < 1e-10
    dla = timm.create_model("dla34", pretrained=False).eval()
    row = cov.classify(dla, x)
    assert row["status"] == "verified"
    got = cov.timm_attribution(dla, x)
    assert got["attribution"] == "not a chain" and "level3.tree1/tree1" in got["attribution_note"]
    assert cov.timm_summary([{"family": "resnet", "found": True, "verified": True, "status": "verified",
                              **chain}])["attribution"] == {"exact": 1}


def test_hf_row_checks_deletion_and_the_exact_decomposition():
    pytest.importorskip("transformers")
    cov = _script()
    row = cov.hf_task(("causal", "gpt2"), lambda _: None)
    assert row["status"] == "verified" and row["delete_restores"] is True
    assert row["exact_on"] == "transformer" and row["exact_dtype"] == "float64" and row["exact_rel_err"] < 1e-10


def test_a_layer_adding_outside_its_units_is_not_covered():
    import torch

    cov = _script()

    class Inner(torch.nn.Module):  # a submodule that adds something (a residual read by nobody)
        __module__ = "transformers.models.fake.modeling_fake"

        def __init__(self):
            super().__init__()
            self.f = torch.nn.Linear(2, 2)

        def forward(self, x):
            return x + self.f(x)

    class Layer(torch.nn.Module):
        __module__ = "transformers.models.fake.modeling_fake"

        def __init__(self):
            super().__init__()
            self.a, self.b = Inner(), Inner()

        def forward(self, x):
            return self.b(self.a(x))

    layer = Layer()
    assert cov._sums_read(layer, {layer.a, layer.b}) and cov._sums_read(layer, {layer})
    assert not cov._sums_read(layer, {layer.a})  # b adds outside any unit


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
        assert row["status"] in {"verified", "partial", "inexact", "unfaithful", "unsupported", "error",
                                 "build failed", "forward failed", "timeout"}
    assert {r["kind"] for r in hf["rows"]} == {"causal", "encoder"} and len(hf["rows"]) == 6
    for kind in ("causal", "encoder"):
        s = hf["summary"][kind]
        assert {"architectures", "built", "found", "verified", "verified_pct", "verified_pct_of_built"} <= set(s)
        assert s["architectures"] == 3
    assert "## timm families" in proc.stdout and "## transformers causal LMs" in proc.stdout
