"""DeepRelax network and solve: symmetry checks, solver recovery, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quintet.atomistic import keys as K
from quintet.atomistic.batch import collate
from quintet.atomistic.testing import (
    assert_batch_matches_single,
    assert_permutation_equivariant,
    assert_rotation_equivariant,
    assert_translation_invariant,
    example_records,
)
from quintet.deeprelax import model as M
from quintet.deeprelax.graph import DISPLACE
from quintet.deeprelax.inference import SolveConfig, relax_batch, relax_ensemble, sigma_from_log_b
from quintet.deeprelax.maths import displace_distances, edge_lengths, per_graph_mean
from quintet.deeprelax.model import DeepRelax, ModelConfig
from quintet.deeprelax.solve import band_penalty, solve_positions


def _records() -> list[dict[str, torch.Tensor]]:
    recs = example_records(torch.float64)
    return [recs["bulk"], recs["triclinic"], recs["slab"]]


def _model(cell_head: str = "equivariant", seed: int = 0, **kw) -> DeepRelax:
    torch.manual_seed(seed)
    m = DeepRelax(ModelConfig(hidden=16, num_layers=2, num_rbf=8, cell_head=cell_head, **kw)).double()
    with torch.no_grad():  # make every head non-trivial (the last layers start at zero)
        for p in m.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return m.eval()


def _fn(model: DeepRelax):
    def fn(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = model(batch)
        ei, disp = out[K.EDGE_INDEX], out[DISPLACE]
        n = batch[K.POSITIONS].shape[0]
        return {
            "mu_relaxed": out[M.MU_RELAXED],
            "log_b_relaxed": out[M.LOG_B_RELAXED],
            "mu_displace": out[M.MU_DISPLACE],
            "atom_mu": per_graph_mean(out[M.MU_DISPLACE], ei[0, disp], n),
            "atom_log_b": per_graph_mean(out[M.LOG_B_RELAXED], ei[0], n),
            "cell_rows": out[M.PRED_CELL].reshape(-1, 3),
            "init_pos": out[M.INIT_POS],
            **({"log_b_cell": out[M.LOG_B_CELL]} if M.LOG_B_CELL in out else {}),
        }

    return fn


def test_distances_are_rotation_and_translation_invariant_and_cell_equivariant() -> None:
    fn = _fn(_model())
    recs = _records()
    inv = ["mu_relaxed", "log_b_relaxed", "mu_displace", "atom_mu", "log_b_cell"]
    assert_rotation_equivariant(
        fn, recs, invariant=inv, vectors=["cell_rows"], positions=["init_pos"], atol=1e-8
    )
    # relaxed distances ignore translations; displace distances follow them the way the labels do
    # (cell filters deform about the origin), so they are invariant only when the cell is kept
    assert_translation_invariant(
        fn, recs, invariant=["mu_relaxed", "log_b_relaxed", "cell_rows", "log_b_cell"], atol=1e-8
    )
    fixed = _fn(_model(relax_cell=False))
    assert_translation_invariant(fixed, recs, invariant=inv[:-1], positions=["init_pos"], atol=1e-8)  # no cell scale
    with pytest.raises(AssertionError, match="mu_displace"):
        assert_translation_invariant(fn, recs, invariant=["mu_displace"], atol=1e-8)


def test_published_cell_head_is_not_rotation_equivariant() -> None:
    fn = _fn(_model("published", residual_base="unrelaxed"))
    recs = _records()
    assert_rotation_equivariant(fn, recs, invariant=["mu_relaxed"], atol=1e-8)  # distances still are
    with pytest.raises(AssertionError, match="cell_rows"):
        assert_rotation_equivariant(fn, recs, vectors=["cell_rows"], atol=1e-8)
    assert_translation_invariant(fn, recs, invariant=["cell_rows"], atol=1e-8)


def test_permutation_and_batch_consistency() -> None:
    fn = _fn(_model())
    recs = _records()
    assert_permutation_equivariant(fn, recs, node_outputs=["atom_mu", "atom_log_b", "init_pos"], atol=1e-8)
    assert_batch_matches_single(fn, recs, node_outputs=["atom_mu", "init_pos"], atol=1e-8)


def test_slab_cell_keeps_its_vacuum_vector() -> None:
    m = _model()
    rec = example_records(torch.float64)["slab"]
    out = m(collate([rec]))
    assert torch.equal(out[M.PRED_CELL][0, 2], rec[K.CELL][2])
    assert not torch.allclose(out[M.PRED_CELL][0, :2], rec[K.CELL][:2])


def test_untrained_model_returns_the_input_structure() -> None:
    """Residual heads start at "no change": the solve then leaves every atom where it is."""
    torch.manual_seed(0)
    m = DeepRelax(ModelConfig(hidden=16, num_layers=1, num_rbf=8)).double().eval()
    batch = collate(_records()[:2])
    res = relax_batch(m, batch)
    assert torch.allclose(res["positions"], batch[K.POSITIONS], atol=1e-9)
    assert torch.allclose(res["cell"], batch[K.CELL])
    assert res["atom_uncertainty"].shape == (batch[K.POSITIONS].shape[0],)
    # every distance starts at b = e^-2 and the cell at b_cell = e^-3: each atom's uncertainty is
    # sqrt(e^-4 + (e^-3 |f|)^2), f its fractional coordinates along the periodic directions
    pos, pbc = batch[K.POSITIONS], batch[K.PBC].reshape(-1, 3)
    want = []
    for g in range(2):
        sel = batch[K.BATCH] == g
        frac = torch.linalg.solve(batch[K.CELL].reshape(-1, 3, 3)[g].T, pos[sel].T).T * pbc[g]
        want.append((np.exp(-4.0) + np.exp(-6.0) * (frac**2).sum(-1)).sqrt())
    assert torch.allclose(res["atom_uncertainty"], torch.cat(want))
    assert torch.allclose(res["cell_uncertainty"], torch.full((2,), float(np.exp(-3.0))).double())
    # without the cell scale (and for model files written before it) only the distances count
    torch.manual_seed(0)
    m0 = DeepRelax(ModelConfig(hidden=16, num_layers=1, num_rbf=8, cell_uncertainty=False)).double().eval()
    res0 = relax_batch(m0, batch)
    assert torch.allclose(res0["uncertainty"], torch.full((2,), float(np.exp(-2.0))).double())
    assert torch.equal(res0["cell_uncertainty"], torch.zeros(2).double())
    assert torch.equal(res0["positions"], res["positions"]) and torch.equal(res0["cell"], res["cell"])


def _exact_problem(seed: int = 0):
    """Unrelaxed = rattled + strained copies of small crystals; 'relaxed' = the clean ones."""
    rng = np.random.default_rng(seed)
    recs = []
    for r in (_records()[0], _records()[2]):  # >= 4 same-cell anchors per atom pin every position
        rel = r[K.POSITIONS].clone()
        strain = torch.eye(3, dtype=torch.float64) + torch.tensor(rng.uniform(-0.03, 0.03, (3, 3)))
        if not bool(r[K.PBC][2]):
            strain[2] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
            strain[:, 2] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        unrel = rel @ strain + torch.tensor(rng.normal(scale=0.1, size=rel.shape))
        recs.append(
            {
                **r,
                K.POSITIONS: unrel,
                K.CELL: r[K.CELL] @ strain,
                K.RELAXED_POSITIONS: rel,
                K.RELAXED_CELL: r[K.CELL],
            }
        )
    batch = collate(recs)
    batch = M.ensure_graph(batch, ModelConfig())
    ei, sh, disp, b = batch[K.EDGE_INDEX], batch[K.EDGE_SHIFT], batch[DISPLACE], batch[K.BATCH]
    y_d = displace_distances(
        batch[K.RELAXED_POSITIONS], batch[K.POSITIONS], batch[K.CELL], ei[:, disp], sh[disp], b
    )
    y_r = edge_lengths(batch[K.RELAXED_POSITIONS], batch[K.RELAXED_CELL], ei, sh, b)
    return recs, batch, y_d, y_r


@pytest.mark.parametrize("objective", ["hinge", "laplace"])
def test_solver_recovers_a_known_structure_from_exact_distances(objective: str) -> None:
    _, batch, y_d, y_r = _exact_problem()
    pos = batch[K.POSITIONS]
    start_err = (pos - batch[K.RELAXED_POSITIONS]).abs().mean()
    res = solve_positions(
        pos, pos, batch[K.CELL], batch[K.RELAXED_CELL], batch[K.EDGE_INDEX], batch[K.EDGE_SHIFT], batch[DISPLACE],
        batch[K.BATCH], 2, y_d, torch.full_like(y_d, 1e-4), y_r, torch.full_like(y_r, 1e-4),
        steps=300, lr=0.05, objective=objective,
    )  # fmt: skip
    err = (res.positions - batch[K.RELAXED_POSITIONS]).abs().mean()
    assert start_err > 0.05 and err < 2e-3
    assert float(res.displace_residual.max()) < 5e-3


def test_batched_solve_equals_one_structure_at_a_time() -> None:
    recs, batch, y_d, y_r = _exact_problem(1)
    noise = torch.Generator().manual_seed(0)
    mu_d = y_d + 0.05 * torch.randn(y_d.shape, generator=noise, dtype=y_d.dtype)
    mu_r = y_r + 0.05 * torch.randn(y_r.shape, generator=noise, dtype=y_r.dtype)
    args = dict(steps=50, lr=0.1, objective="hinge")
    ei, sh, disp, b = batch[K.EDGE_INDEX], batch[K.EDGE_SHIFT], batch[DISPLACE], batch[K.BATCH]
    pos = batch[K.POSITIONS]
    sig_d, sig_r = torch.full_like(mu_d, 0.02), torch.full_like(mu_r, 0.02)
    full = solve_positions(
        pos, pos, batch[K.CELL], batch[K.RELAXED_CELL], ei, sh, disp, b, 2, mu_d, sig_d, mu_r, sig_r, **args
    )
    n0 = recs[0][K.POSITIONS].shape[0]
    e_mask = b[ei[0]] == 0
    d_mask = b[ei[0, disp]] == 0
    one = solve_positions(
        pos[:n0], pos[:n0], batch[K.CELL][:1], batch[K.RELAXED_CELL][:1], ei[:, e_mask], sh[e_mask], disp[e_mask],
        b[:n0], 1, mu_d[d_mask], sig_d[d_mask], mu_r[e_mask], sig_r[e_mask], **args,
    )  # fmt: skip
    assert torch.allclose(full.positions[:n0], one.positions, atol=1e-10)


@pytest.mark.parametrize("objective", ["hinge", "laplace"])
def test_closed_form_solve_follows_the_autograd_adam_trajectory(objective: str) -> None:
    """The solve's closed-form gradient must reproduce Adam on the autograd gradient of the published
    objective (per-structure mean band penalty over displace edges + over edges that can move)."""
    import math

    _, batch, y_d, y_r = _exact_problem(2)
    noise = torch.Generator().manual_seed(1)
    mu_d = y_d + 0.05 * torch.randn(y_d.shape, generator=noise, dtype=y_d.dtype)
    mu_r = y_r + 0.05 * torch.randn(y_r.shape, generator=noise, dtype=y_r.dtype)
    sig_d, sig_r = torch.full_like(mu_d, 0.01), torch.full_like(mu_r, 0.01)
    ei, sh, disp, b = batch[K.EDGE_INDEX], batch[K.EDGE_SHIFT], batch[DISPLACE], batch[K.BATCH]
    pos, cell_u, cell = batch[K.POSITIONS], batch[K.CELL], batch[K.RELAXED_CELL]
    steps, lr = 30, 0.1
    got = solve_positions(
        pos, pos, cell_u, cell, ei, sh, disp, b, 2, mu_d, sig_d, mu_r, sig_r, steps=steps, lr=lr,
        objective=objective, skip_converged=False,
    ).positions  # fmt: skip
    moving = ei[0] != ei[1]
    x = pos.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for t in range(steps):
        opt.param_groups[0]["lr"] = lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t / steps)))
        dd = displace_distances(x, pos, cell_u, ei[:, disp], sh[disp], b)
        dr = edge_lengths(x, cell, ei, sh, b)[moving]
        loss = per_graph_mean(band_penalty(dd, mu_d, sig_d, objective), b[ei[0, disp]], 2) + per_graph_mean(
            band_penalty(dr, mu_r[moving], sig_r[moving], objective), b[ei[0, moving]], 2
        )
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    assert (x.detach() - pos).abs().max() > 1e-2  # the trajectory went somewhere
    torch.testing.assert_close(got, x.detach(), atol=1e-9, rtol=0)


def test_structures_already_inside_their_bands_are_skipped_with_the_same_result() -> None:
    """With the hinge, a structure whose start satisfies every band has an exactly zero gradient and never
    moves; leaving it out of the loop (the default) must give bit-identical positions for the batch."""
    recs, batch, y_d, y_r = _exact_problem(1)
    ei, sh, disp, b = batch[K.EDGE_INDEX], batch[K.EDGE_SHIFT], batch[DISPLACE], batch[K.BATCH]
    pos, cell = batch[K.POSITIONS], batch[K.RELAXED_CELL]
    n0 = recs[0][K.POSITIONS].shape[0]
    # structure 0: bands centred on its own start (converged); structure 1: bands around the relaxed one
    d_start = displace_distances(pos, pos, batch[K.CELL], ei[:, disp], sh[disp], b)
    r_start = edge_lengths(pos, cell, ei, sh, b)
    d0, r0 = b[ei[0, disp]] == 0, b[ei[0]] == 0
    mu_d, mu_r = torch.where(d0, d_start, y_d), torch.where(r0, r_start, y_r)
    sig_d, sig_r = torch.full_like(mu_d, 0.02), torch.full_like(mu_r, 0.02)

    def solve(mu_d: torch.Tensor, skip: bool):
        return solve_positions(
            pos, pos, batch[K.CELL], cell, ei, sh, disp, b, 2, mu_d, sig_d, mu_r, sig_r, steps=40,
            skip_converged=skip,
        )  # fmt: skip

    fast, full = solve(mu_d, True).positions, solve(mu_d, False).positions
    assert torch.equal(fast, full)
    assert torch.equal(fast[:n0], pos[:n0])  # the converged structure did not move
    assert (fast[n0:] - pos[n0:]).abs().max() > 1e-3  # the other one was solved
    # a NaN prediction is not taken for a converged start: same result as the full loop, NaN residual
    nan_d = torch.where(d0, torch.full_like(mu_d, float("nan")), mu_d)
    broken = solve(nan_d, True)
    assert torch.equal(broken.positions, solve(nan_d, False).positions)
    assert torch.isnan(broken.displace_residual[0]) and torch.isfinite(broken.displace_residual[1])


def test_band_penalty_is_zero_inside_the_band() -> None:
    d = torch.tensor([0.9, 1.0, 1.1, 1.3, 0.5])
    pen = band_penalty(d, torch.ones(5), torch.full((5,), 0.15))
    assert pen.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.15, 0.35])
    with pytest.raises(ValueError, match="objective"):
        band_penalty(d, torch.ones(5), torch.ones(5), "nope")  # type: ignore[arg-type]


def test_solve_config_steps_zero_returns_start() -> None:
    m = _model()
    batch = collate(_records()[:1])
    res = relax_batch(m, batch, SolveConfig(steps=0))
    assert torch.equal(res["positions"], res["init_positions"])
    assert not torch.allclose(res["positions"], batch[K.POSITIONS])


def test_position_loss_is_the_first_guess_error_and_trains_the_displacement_head() -> None:
    """The first-guess term equals the per-structure mean Euclidean error of p = u F + δ (by hand for an
    untrained model, where p = u), and it is what gives the displacement readout a gradient."""
    from quintet.deeprelax.task import DeepRelaxTask, LossConfig

    _, batch, _, _ = _exact_problem()
    batch = {k: v for k, v in batch.items() if k not in (K.EDGE_INDEX, K.EDGE_SHIFT, DISPLACE)}
    torch.manual_seed(0)
    model = DeepRelax(ModelConfig(hidden=16, num_layers=1, num_rbf=8)).double()
    per_atom = (batch[K.POSITIONS] - batch[K.RELAXED_POSITIONS]).norm(dim=-1)
    by_hand = per_graph_mean(per_atom, batch[K.BATCH], 2).mean()
    with_term = DeepRelaxTask(model, LossConfig(position_weight=2.0, solve_in_val=False)).step(batch, "train")
    without = DeepRelaxTask(model, LossConfig(position_weight=0.0, solve_in_val=False)).step(batch, "train")
    assert torch.allclose(with_term.loss - without.loss, 2.0 * by_hand, atol=1e-9)
    assert torch.allclose(with_term.metrics["guess_mae"], per_graph_mean(
        (batch[K.POSITIONS] - batch[K.RELAXED_POSITIONS]).abs().mean(-1), batch[K.BATCH], 2).mean())  # fmt: skip
    grads = []
    for out in (with_term, without):
        model.zero_grad()
        out.loss.backward()
        grads.append(model.displacement.lin.weight.grad.abs().sum().item())
    assert grads[0] > 1e-6 and grads[1] < grads[0]


def test_cell_scale_learns_from_detached_features_and_leaves_the_rest_of_training_unchanged() -> None:
    """The cell scale's NLL must not reach the backbone or the cell: with and without the head, the same
    seed gives the same loss terms' gradients on every shared parameter; the head's own gradient is non-zero."""
    from quintet.deeprelax.task import DeepRelaxTask, LossConfig

    recs = _exact_problem(0)[0]
    batch = collate(recs)
    grads = {}
    for flag in (True, False):
        torch.manual_seed(0)
        m = DeepRelax(ModelConfig(hidden=16, num_layers=2, num_rbf=8, cell_uncertainty=flag)).double()
        with torch.no_grad():  # non-trivial heads, drawn from a separate generator (same for both models)
            gen, gen_scale = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
            for name, p in m.named_parameters():
                if p.abs().sum() == 0:  # the scale's own draws come from another generator
                    g = gen_scale if name.startswith("cell_scale") else gen
                    p.copy_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        out = DeepRelaxTask(m, LossConfig(solve_in_val=False)).step(batch, "train")
        out.loss.backward()
        grads[flag] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        if flag:
            assert "cell_sigma" in out.metrics
    shared = set(grads[False])
    assert shared < set(grads[True]) and all(n.startswith("cell_scale") for n in set(grads[True]) - shared)
    for n in shared:
        torch.testing.assert_close(grads[True][n], grads[False][n], rtol=0, atol=1e-12, msg=n)
    assert grads[True]["cell_scale.2.bias"].abs().item() > 0


def test_ensemble_combines_members_as_documented_and_ignores_their_order() -> None:
    """Mean μ, moment-matched σ = sqrt(mean b² + var μ / 2), mean first guess and cell, spread = RMS
    distance of the first guesses from their mean (for two members: half their distance), by hand."""
    a, b = _model(seed=0), _model(seed=1)
    batch = collate(_records())
    oa, ob = a(batch), b(batch)
    solve = SolveConfig(steps=0)  # the solve returns its start: the combined first guess
    res = relax_ensemble([a, b], batch, solve)
    for mu, lb, sig in (
        (M.MU_RELAXED, M.LOG_B_RELAXED, "sigma_relaxed"),
        (M.MU_DISPLACE, M.LOG_B_DISPLACE, "sigma_displace"),
    ):
        ba, bb = sigma_from_log_b(oa[lb], solve), sigma_from_log_b(ob[lb], solve)
        half = (oa[mu] - ob[mu]) / 2
        assert torch.allclose(res[mu], (oa[mu] + ob[mu]) / 2)
        assert torch.allclose(res[sig], ((ba**2 + bb**2) / 2 + half**2 / 2).sqrt())
    guess = (oa[M.INIT_POS] + ob[M.INIT_POS]) / 2
    assert torch.allclose(res["positions"], guess)
    assert torch.allclose(res["cell"], (oa[M.PRED_CELL] + ob[M.PRED_CELL]) / 2)
    spread = (oa[M.INIT_POS] - ob[M.INIT_POS]).norm(dim=-1) / 2
    assert torch.allclose(res["atom_spread"], spread) and bool((spread > 0).all())
    assert torch.allclose(res["spread"], per_graph_mean(spread, batch[K.BATCH], 3))
    # the cell's scale: b_cell² = mean b_m² + (mean over the 9 entries of var C_m) / 2
    ca, cb = sigma_from_log_b(oa[M.LOG_B_CELL], solve), sigma_from_log_b(ob[M.LOG_B_CELL], solve)
    half_c = ((oa[M.PRED_CELL] - ob[M.PRED_CELL]) / 2) ** 2
    assert torch.allclose(res["cell_uncertainty"], ((ca**2 + cb**2) / 2 + half_c.mean((-1, -2)) / 2).sqrt())
    flipped = relax_ensemble([b, a], batch)
    assert torch.allclose(flipped["positions"], relax_ensemble([a, b], batch)["positions"], atol=1e-12)


def test_ensemble_of_one_model_is_the_model_and_mismatched_members_raise() -> None:
    a = _model()
    batch = collate(_records())
    one, twice = relax_batch(a, batch), relax_ensemble([a, a], batch)
    assert torch.equal(one["spread"], torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(twice["positions"], one["positions"])
    assert torch.allclose(twice["uncertainty"], one["uncertainty"])
    assert torch.equal(twice["atom_spread"], torch.zeros_like(twice["atom_spread"]))
    with pytest.raises(ValueError, match="builds other edges"):
        relax_ensemble([a, _model(cutoff=5.0)], batch)
    with pytest.raises(ValueError, match="at least one model"):
        relax_ensemble([], batch)


def test_detached_base_cell_keeps_the_outputs_and_trains_the_cell_only_through_cell_and_position_losses() -> None:
    """``detach_base_cell``: the same forward values; with only the distance NLLs in the loss the cell head
    gets no gradient (it does without the option), and with the published losses plus the position term
    its gradient is exactly that of the cell L1 + position loss."""
    from quintet.deeprelax.task import DeepRelaxTask, LossConfig

    batch = collate(_exact_problem(0)[0])
    models = {flag: _model(detach_base_cell=flag).train() for flag in (False, True)}
    outs = {flag: m(batch) for flag, m in models.items()}
    for key in (M.MU_RELAXED, M.MU_DISPLACE, M.PRED_CELL, M.INIT_POS):
        torch.testing.assert_close(outs[True][key], outs[False][key], rtol=0, atol=0)

    def cell_grad(flag: bool, **weights: float) -> torch.Tensor:
        m = models[flag]
        m.zero_grad()
        DeepRelaxTask(m, LossConfig(solve_in_val=False, **weights)).step(batch, "train").loss.backward()
        return torch.cat([p.grad.flatten() for p in m.cell_head.parameters()])

    distances_only = {"cell_weight": 0.0, "position_weight": 0.0}
    assert cell_grad(False, **distances_only).abs().sum() > 1e-6
    assert cell_grad(True, **distances_only).abs().sum() == 0
    cell_and_position = {"displace_weight": 0.0, "relaxed_weight": 0.0}
    torch.testing.assert_close(cell_grad(True), cell_grad(True, **cell_and_position), rtol=0, atol=1e-12)
    assert not torch.allclose(cell_grad(False), cell_grad(True))
