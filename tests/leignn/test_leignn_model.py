"""LEIGNN physics: the shipped equivariance checks on every variant, conservative forces and
stress against finite differences, supercell extensivity, normalisation fitted by hand."""

from __future__ import annotations

import pytest
import torch

from quintet.atomistic import keys as K
from quintet.atomistic.testing import (
    assert_batch_matches_single,
    assert_forces_match_fd,
    assert_permutation_equivariant,
    assert_rotation_equivariant,
    assert_stress_match_fd,
    assert_supercell_consistent,
    assert_translation_invariant,
    example_records,
)
from quintet.leignn.model import LEIGNN, LEIGNNModelConfig

RECORDS = example_records()


def tiny(variant: str = "leignn", forces: str = "direct") -> LEIGNN:
    torch.manual_seed(0)
    cfg = LEIGNNModelConfig(hidden=16, num_layers=2, num_rbf=8, cutoff=4.0, variant=variant, forces=forces)  # type: ignore[arg-type]
    model = LEIGNN(cfg).double().eval()
    torch.nn.init.normal_(model.energy_head.net[-1].weight)  # zero-initialised: make the energy non-trivial
    return model


@pytest.mark.parametrize("variant", ["leignn", "vanilla", "vanilla_nmu"])
@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_equivariance_all_variants(variant: str, forces: str) -> None:
    m = tiny(variant, forces)
    recs = list(RECORDS.values())
    assert_rotation_equivariant(m, recs, invariant=[K.ENERGY], vectors=[K.FORCES])
    assert_translation_invariant(m, recs, invariant=[K.ENERGY], vectors=[K.FORCES])
    assert_permutation_equivariant(m, recs, graph_outputs=[K.ENERGY], node_outputs=[K.FORCES])
    assert_batch_matches_single(m, recs, graph_outputs=[K.ENERGY], node_outputs=[K.FORCES])


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_supercell_is_extensive(forces: str) -> None:
    m = tiny("leignn", forces)
    for name in ("bulk", "triclinic"):
        assert_supercell_consistent(
            m, RECORDS[name], (2, 1, 1), extensive=[K.ENERGY], node_outputs=[K.FORCES]
        )


def test_conservative_forces_and_stress_match_finite_differences() -> None:
    m = tiny("leignn", "conservative")
    for name in ("bulk", "molecule", "slab"):
        assert_forces_match_fd(m, RECORDS[name])

    def with_stress(b: dict) -> dict:
        return m(b, compute_stress=True)

    assert_stress_match_fd(with_stress, RECORDS["bulk"])
    assert_rotation_equivariant(with_stress, [RECORDS["bulk"]], tensors=[K.STRESS])


def test_direct_forces_are_not_conservative() -> None:
    # the paper's direct head is a free vector readout: finite differences must NOT match it
    with pytest.raises(AssertionError):
        assert_forces_match_fd(tiny("leignn", "direct"), RECORDS["molecule"])
    with pytest.raises(ValueError, match="conservative"):
        tiny("leignn", "direct")(
            __import__("quintet.atomistic.batch", fromlist=["collate"]).collate([RECORDS["bulk"]]),
            compute_stress=True,
        )


def test_normalisation_fit_by_hand() -> None:
    m = tiny()
    # E = 2*n_H(-1.5) + ... : two structures, exactly solvable references
    recs = [
        {K.ATOMIC_NUMBERS: torch.tensor([1, 1, 8]), K.ENERGY: torch.tensor(-2 * 1.5 - 7.0)},
        {K.ATOMIC_NUMBERS: torch.tensor([1, 8, 8]), K.ENERGY: torch.tensor(-1.5 - 14.0)},
    ]
    m.fit_normalisation(recs)
    shift = m.normalisation.energy_shift
    assert float(shift[1]) == pytest.approx(-1.5, abs=1e-5)
    assert float(shift[8]) == pytest.approx(-7.0, abs=1e-5)
    with pytest.raises(ValueError, match="C were not in"):
        m.check_elements(torch.tensor([1, 6]))


def test_empty_and_out_of_range_inputs() -> None:
    m = tiny()
    from quintet.atomistic.batch import collate

    bad = dict(RECORDS["molecule"])
    bad[K.ATOMIC_NUMBERS] = bad[K.ATOMIC_NUMBERS].clone()
    bad[K.ATOMIC_NUMBERS][0] = 0
    with pytest.raises(ValueError, match="atomic numbers"):
        m(collate([bad]))
    empty = {
        K.POSITIONS: torch.zeros(0, 3, dtype=torch.float64),
        K.ATOMIC_NUMBERS: torch.zeros(0, dtype=torch.long),
        K.CELL: torch.zeros(3, 3, dtype=torch.float64),
        K.PBC: torch.zeros(3, dtype=torch.bool),
    }
    with pytest.raises(ValueError, match="empty"):
        m(collate([empty]))


@pytest.mark.parametrize("kind", ["schnet", "visnet"])
def test_peer_wrappers_are_periodic_and_conservative(kind: str) -> None:
    from leignn_peers import PeerConfig, PeerPotential

    torch.manual_seed(0)
    m = (
        PeerPotential(PeerConfig(kind=kind, hidden=16, num_layers=2, cutoff=4.0, max_neighbors=None))
        .double()
        .eval()
    )  # type: ignore[arg-type]
    assert_forces_match_fd(m, RECORDS["bulk"])
    assert_supercell_consistent(m, RECORDS["bulk"], extensive=[K.ENERGY], node_outputs=[K.FORCES], atol=1e-5)
    assert_rotation_equivariant(
        m, [RECORDS["molecule"], RECORDS["slab"]], invariant=[K.ENERGY], vectors=[K.FORCES], atol=1e-5
    )
