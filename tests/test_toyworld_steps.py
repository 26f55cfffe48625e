"""``python -m toyworld steps``: the step-cost benchmark runs for every UNet variant and precision."""

from toyworld.__main__ import run


def test_step_cost_benchmark_runs():
    report = run(["steps", "--device", "cpu", "--batches", "2", "--steps", "1", "--render", "4",
                  "--unets", "v1", "attn16", "lat32"])
    assert set(report["seconds_per_step"]) == {"v1@2", "attn16@2", "lat32@2"}
    bf16 = run(["steps", "--device", "cpu", "--batches", "2", "--steps", "1", "--render", "4", "--unets", "lat32",
                "--precisions", "fp32", "bf16"])
    assert set(bf16["seconds_per_step"]) == {"lat32@2", "lat32@2@bf16"}
    assert all(seconds > 0 for seconds in report["seconds_per_step"].values()) and report["render_4_scenes_s"] > 0
