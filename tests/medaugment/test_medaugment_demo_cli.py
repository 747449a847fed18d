"""Demo section and the ``preview`` CLI verb."""

from __future__ import annotations

import json

import numpy as np

from quintet.medaugment.data import read_image, read_mask, write_image
from quintet.medaugment.demo import demo, phantom


def test_demo_quick_reports_checks_and_writes_the_grid(tmp_path):
    section = demo(tmp_path, quick=True)
    assert section.metrics["labels_preserved"] is True
    assert section.metrics["replay_identical"] is True
    assert section.metrics["expanded_files"] == 5 * section.metrics["expanded_sources"]
    assert section.metrics["resume_skipped"] == section.metrics["expanded_sources"]
    assert section.images and section.images[0].is_file() and section.images[0].stat().st_size > 10_000
    assert "throughput" in section.markdown


def test_preview_cli_writes_outputs_records_and_config(tmp_path):
    from quintet.cli import main

    img, mask = phantom(48, 4, np.uint16)
    write_image(tmp_path / "ct.png", img)
    write_image(tmp_path / "ct_mask.png", mask)
    rc = main(
        [
            "medaugment",
            "preview",
            f"image={tmp_path / 'ct.png'}",
            f"mask={tmp_path / 'ct_mask.png'}",
            f"out={tmp_path / 'prev'}",
            "rows=1",
            "num_branches=3",
        ]
    )
    assert rc == 0
    out = tmp_path / "prev"
    assert (out / "preview.png").is_file() and (out / "medaugment_preview.yaml").is_file()
    records = json.loads((out / "branches.json").read_text())
    assert len(records) == 4 and records[-1]["combination"] is None
    np.testing.assert_array_equal(read_image(out / "row0_4.png"), img)  # 16-bit original kept exactly
    assert read_image(out / "row0_1.png").dtype == np.uint16
    assert set(np.unique(read_mask(out / "row0_2_mask.png"))) <= {0, 1}
