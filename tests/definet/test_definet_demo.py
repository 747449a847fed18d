"""The DefiNet demo section runs on embedded synthetic data and beats the dummy."""

from __future__ import annotations

import pytest

from quintet.definet.demo import demo


def test_quick_demo_writes_plots_and_beats_the_dummy(tmp_path):
    section = demo(tmp_path, quick=True)
    assert section.metrics["ratio_vs_dummy"] < 0.8
    assert all(p.is_file() and p.suffix == ".png" for p in section.images)
    assert "DefiNet" in section.markdown and "dummy" in section.markdown


@pytest.mark.integration
def test_real_data_section_reports_model_vs_chgnet(shared_data, tmp_path):
    """The real-data path (the shipped model's place taken by the quick demo's model): the eval job's CHGNet
    finish from the prediction beside the steps and seconds recorded in meta.csv."""
    pytest.importorskip("chgnet")
    from quintet.definet.demo import _real_section

    demo(tmp_path / "q", quick=True)
    best = next((tmp_path / "q" / "run").glob("best*.pt"))
    section = _real_section(str(best), shared_data / "materials" / "defects2d", tmp_path / "real", quick=True)
    m = section.metrics
    assert m["model_s_per_structure"] > 0 and m["chgnet_s_per_structure"] > 0
    assert m["median_chgnet_steps_from_input"] >= 0 and m["median_chgnet_steps_from_prediction"] >= 0
    assert "CHGNet steps from input" in section.markdown and "Fallback" not in section.markdown
