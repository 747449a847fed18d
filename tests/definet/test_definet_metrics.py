"""DefiNet losses and metrics on hand-computed numbers; vacancy placeholders never count."""

from __future__ import annotations

import math

import torch

from quintet.definet.metrics import (
    coord_mae_per_structure,
    defect_distance,
    local_mae_per_structure,
    position_loss,
    real_atom_mask,
)


def test_position_loss_is_mean_euclidean_error_over_real_atoms():
    pred = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [100.0, 0.0, 0.0]])
    target = torch.zeros(3, 3)
    defect = torch.tensor([0, 1, 2])
    loss = position_loss(pred, target, real_atom_mask(defect))
    assert math.isclose(loss.item(), (0.0 + 5.0) / 2)


def test_coord_mae_per_structure_by_hand():
    pred = torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.6, 0.0], [9.0, 9.0, 9.0], [0.1, 0.1, 0.1]])
    target = torch.zeros(4, 3)
    mask = real_atom_mask(torch.tensor([0, 0, 2, 1]))
    batch = torch.tensor([0, 0, 0, 1])
    mae = coord_mae_per_structure(pred, target, mask, batch, 3)
    torch.testing.assert_close(mae[:2], torch.tensor([(0.1 + 0.2) / 2, 0.1]))
    assert torch.isnan(mae[2])  # a structure with no atoms


def test_defect_distance_uses_the_minimum_image_and_local_mae_selects_atoms():
    cell = torch.diag(torch.tensor([10.0, 10.0, 10.0])).unsqueeze(0)
    pbc = torch.tensor([[True, True, True]])
    pos = torch.tensor([[0.5, 0.0, 0.0], [9.0, 0.0, 0.0], [5.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
    defect = torch.tensor([2, 0, 0, 0])  # a vacancy placeholder at x = 0.5
    batch = torch.zeros(4, dtype=torch.long)
    d = defect_distance(pos, cell, pbc, defect, batch)
    torch.testing.assert_close(d, torch.tensor([0.0, 1.5, 4.5, 3.5]))
    d_open = defect_distance(pos, cell, torch.tensor([[False, True, True]]), defect, batch)
    torch.testing.assert_close(d_open, torch.tensor([0.0, 8.5, 4.5, 3.5]))
    pred = pos + torch.tensor([[1.0, 0, 0], [0.3, 0, 0], [0.6, 0, 0], [0.9, 0, 0]])
    local = local_mae_per_structure(pred, pos, real_atom_mask(defect), d, batch, 1, radii=(2.0, 4.0, 5.0))
    torch.testing.assert_close(local[2.0], torch.tensor([0.1]))  # only atom 1 (the placeholder never counts)
    torch.testing.assert_close(local[4.0], torch.tensor([(0.1 + 0.3) / 2]))
    torch.testing.assert_close(local[5.0], torch.tensor([(0.1 + 0.2 + 0.3) / 3]))


def test_structures_without_defects_have_infinite_distance():
    pos = torch.rand(3, 3)
    d = defect_distance(
        pos,
        torch.eye(3).unsqueeze(0) * 5,
        torch.ones(1, 3, dtype=torch.bool),
        torch.zeros(3, dtype=torch.long),
        torch.zeros(3, dtype=torch.long),
    )
    assert torch.isinf(d).all()
