"""The DefiNet demo section runs on embedded synthetic data and beats the dummy."""

from __future__ import annotations

from quintet.definet.demo import demo


def test_quick_demo_writes_plots_and_beats_the_dummy(tmp_path):
    section = demo(tmp_path, quick=True)
    assert section.metrics["ratio_vs_dummy"] < 0.8
    assert all(p.is_file() and p.suffix == ".png" for p in section.images)
    assert "DefiNet" in section.markdown and "dummy" in section.markdown
