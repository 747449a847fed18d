"""``quintet leignn export``: a TorchScript file that runs without quintet's Python code.

The exported module is the trained network with its fitted energy reference, in the model's dtype.
It takes a neighbour list instead of building one (as NequIP's and MACE's deployed models do), so
any MD code can call it after computing the pairs within ``cutoff``::

    m = torch.jit.load("model.pt")
    out = m(pos, z, cell, batch, edge_index, edge_shift, num_graphs, compute_stress)
    # pos (N, 3) Å; z (N,) long; cell (B, 3, 3) rows = lattice vectors (zeros for molecules);
    # batch (N,) long structure index; edge_index (2, E) long, row 0 = centre i, row 1 = neighbour j;
    # edge_shift (E, 3) integer cell multiples S (float): r_ij = r_j - r_i + S @ cell
    # out: {"energy" (B,) eV, "atom_energy" (N,), "forces" (N, 3) eV/Å[, "stress" (B, 3, 3) eV/Å³]}

Conservative models take forces by autograd inside the module: do not call them under ``torch.no_grad()``.

``m.cutoff``, ``m.max_neighbors`` (-1: all) and ``m.conservative`` are attributes of the loaded module;
``quintet_leignn.json`` inside the file records the format version, the quintet and torch versions,
the elements and the dtype. :func:`load_exported` checks the format version; :func:`exported_calculator`
wraps the file as an ASE calculator (neighbour list by quintet's vesin backend).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from quintet.atomistic import keys as K
from quintet.atomistic.nn.scatter import scatter_sum
from quintet.leignn.model import LEIGNN

__all__ = [
    "FORMAT_VERSION",
    "ExportJob",
    "ExportedPotential",
    "export",
    "export_model",
    "exported_calculator",
    "is_exported",
    "load_exported",
]

FORMAT_VERSION = 1
META_FILE = "quintet_leignn.json"


class _Layer(nn.Module):
    """One backbone layer (global exchange if present, message, update) in a TorchScript-friendly form."""

    __constants__ = ["has_global"]  # noqa: RUF012  (a TorchScript constant: the dead branch is not compiled)

    def __init__(self, model: LEIGNN, k: int) -> None:
        super().__init__()
        bb = model.backbone
        self.message = bb.messages[k]
        self.update = bb.updates[k]
        self.has_global = bool(bb.global_node)
        self.global_scalar = bb.global_scalars[k] if bb.global_node else nn.Identity()
        self.global_vector = bb.global_vectors[k] if bb.global_node else nn.Identity()
        self.message_scale = float(bb.message_scale)
        self.inv_sqrt_2 = float(bb.inv_sqrt_2)

    def forward(
        self, x: Tensor, v: Tensor, g: Tensor, gv: Tensor, edge_index: Tensor, rbf: Tensor, unit: Tensor,
        batch: Tensor, num_graphs: int, first: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
        if self.has_global:
            x = self.global_scalar.to_atoms(x, g, batch)
            if not first:  # with v = 0 and G = 0 the exchange leaves v at zero (as in the backbone)
                v = self.global_vector.to_atoms(v, gv, batch)
        if first:
            dx, dv = self.message(x, None, edge_index, rbf, unit)
        else:
            dx, dv = self.message(x, v, edge_index, rbf, unit)
        if self.message_scale != 1.0:
            dx, dv = dx * self.message_scale, dv * self.message_scale
        x = (x + dx) * self.inv_sqrt_2
        v = v + dv
        dx, dv = self.update(x, v)
        x = x + dx
        v = v + dv
        if self.has_global:
            g = self.global_scalar.from_atoms(x, g, batch, num_graphs)
            gv = self.global_vector.from_atoms(v, gv, batch, num_graphs)
        return x, v, g, gv


class _ScriptableLEIGNN(nn.Module):
    """The computation of :class:`~quintet.leignn.model.LEIGNN` on an explicit neighbour list."""

    __constants__ = ["conservative", "has_global"]  # noqa: RUF012

    def __init__(self, model: LEIGNN) -> None:
        super().__init__()
        cfg = model.config
        self.cutoff = float(cfg.cutoff)
        self.max_neighbors = -1 if cfg.max_neighbors is None else int(cfg.max_neighbors)
        self.conservative = cfg.forces == "conservative"
        self.num_elements = int(cfg.num_elements)
        self.embedding = model.embedding.embedding
        self.radial = model.radial
        self.layers = nn.ModuleList(_Layer(model, k) for k in range(cfg.num_layers))
        self.has_global = bool(model.backbone.global_node)
        self.global_init = model.backbone.global_scalars[0].init_embedding if self.has_global else None
        self.hidden = int(cfg.hidden)
        self.energy_head = model.energy_head
        self.force_head = model.force_head if model.force_head is not None else nn.Identity()
        norm = model.normalisation
        for name in ("energy_shift", "energy_scale", "force_scale", "known_elements"):
            self.register_buffer(name, getattr(norm, name).detach().clone())

    def _check(self, z: Tensor) -> None:
        if z.numel() == 0:
            raise ValueError("empty structure: no atoms")
        if int(z.min()) < 1 or int(z.max()) > self.num_elements:
            raise ValueError("atomic numbers must lie in 1..num_elements")
        if bool((~self.known_elements[z]).any()):
            raise ValueError(
                "element(s) not in this model's training data (see quintet_leignn.json: elements)"
            )

    def _energy(
        self, z: Tensor, pos: Tensor, cell: Tensor, batch: Tensor, edge_index: Tensor, edge_shift: Tensor,
        num_graphs: int,
    ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        i, j = edge_index[0], edge_index[1]
        vec = pos[j] - pos[i]
        if edge_shift.numel() > 0:
            vec = vec + torch.einsum("ek,ekl->el", edge_shift.to(pos.dtype), cell[batch[i]])
        d = torch.linalg.vector_norm(vec, dim=-1)
        unit = vec / d.clamp(min=1e-9).unsqueeze(-1)
        rbf = self.radial(d)
        x = self.embedding(z).to(pos.dtype)
        v = x.new_zeros((x.shape[0], 3, x.shape[1]))
        g, gv = x.new_zeros((num_graphs, self.hidden)), x.new_zeros((num_graphs, 3, self.hidden))
        if self.global_init is not None:
            g = self.global_init.unsqueeze(0).expand(num_graphs, -1)
        for k, layer in enumerate(self.layers):
            x, v, g, gv = layer(x, v, g, gv, edge_index, rbf, unit, batch, num_graphs, k == 0)
        raw = self.energy_head(x).squeeze(-1)
        atom_energy = raw * self.energy_scale.to(raw.dtype) + self.energy_shift[z].to(raw.dtype)
        return scatter_sum(atom_energy, batch, num_graphs), atom_energy, v

    def forward(
        self, pos: Tensor, z: Tensor, cell: Tensor, batch: Tensor, edge_index: Tensor, edge_shift: Tensor,
        num_graphs: int, compute_stress: bool = False,
    ) -> dict[str, Tensor]:  # fmt: skip
        self._check(z)
        cell = cell.reshape(-1, 3, 3).to(pos.dtype)
        if compute_stress and not self.conservative:
            raise ValueError("stress needs a model trained with forces='conservative'")
        if not self.conservative:
            energy, atom_energy, v = self._energy(z, pos, cell, batch, edge_index, edge_shift, num_graphs)
            forces = self.force_head(v).squeeze(-1) * self.force_scale
            return {"energy": energy, "atom_energy": atom_energy, "forces": forces}
        # conservative forces need autograd: do not call the module under torch.no_grad()
        leaf = pos.detach().requires_grad_(True)
        strain = torch.zeros((num_graphs, 3, 3), dtype=pos.dtype, device=pos.device)
        strain.requires_grad_(compute_stress)
        p, c = leaf, cell
        if compute_stress:
            sym = 0.5 * (strain + strain.transpose(1, 2))
            p = leaf + torch.einsum("ni,nij->nj", leaf, sym[batch])
            c = cell + torch.bmm(cell, sym)
        energy, atom_energy, _ = self._energy(z, p, c, batch, edge_index, edge_shift, num_graphs)
        wrt = [leaf, strain] if compute_stress else [leaf]
        grads = torch.autograd.grad([energy.sum()], wrt)
        g_pos = grads[0]
        assert g_pos is not None
        out = {"energy": energy.detach(), "atom_energy": atom_energy.detach(), "forces": -g_pos}
        if compute_stress:
            g_strain = grads[1]
            assert g_strain is not None
            vol = torch.abs(torch.linalg.det(cell))
            out["stress"] = g_strain / vol.view(-1, 1, 1)
        return out


def _meta(model: LEIGNN, dtype: torch.dtype) -> dict[str, Any]:
    from ase.data import chemical_symbols

    from quintet import __version__

    known = torch.nonzero(model.normalisation.known_elements).flatten().tolist()
    cfg = model.config
    return {
        "format": "quintet-leignn-torchscript",
        "format_version": FORMAT_VERSION,
        "quintet_version": __version__,
        "torch_version": torch.__version__,
        "cutoff": cfg.cutoff,
        "max_neighbors": cfg.max_neighbors,
        "forces": cfg.forces,
        "dtype": str(dtype).removeprefix("torch."),
        "elements": [chemical_symbols[z] for z in known],
        "atomic_numbers": known,
        "inputs": "pos, z, cell, batch, edge_index, edge_shift, num_graphs, compute_stress (see quintet.leignn.export)",
    }


def export_model(model: LEIGNN, path: str | Path) -> Path:
    """Compile ``model`` with TorchScript and write it (atomically) to ``path``; returns the path."""
    from quintet.io import atomic_open

    model = model.cpu().eval()
    dtype = next(model.parameters()).dtype
    scripted = torch.jit.script(_ScriptableLEIGNN(model))
    for p in scripted.parameters():
        p.requires_grad_(False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        torch.jit.save(scripted, fh, _extra_files={META_FILE: json.dumps(_meta(model, dtype))})
    return path


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` is a file written by :func:`export_model` (a TorchScript zip with our metadata)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith(f"/extra/{META_FILE}") for n in zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_exported(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.jit.ScriptModule, dict]:
    """Load an exported file and its metadata; a file of another export format version is refused."""
    from quintet import __version__

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported model file")
    extra = {META_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError/ValueError for non-TorchScript files
        raise ValueError(
            f"{path}: not a TorchScript file ({str(exc).strip().splitlines()[0]}); "
            f"make one with `quintet leignn export -m best.pt -o {path.name}`"
        ) from exc
    if not extra[META_FILE]:
        raise ValueError(
            f"{path}: a TorchScript file but not a quintet LEIGNN export (no {META_FILE} inside)"
        )
    meta = json.loads(extra[META_FILE])
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: LEIGNN export format {meta.get('format_version')} (quintet {meta.get('quintet_version')}); "
            f"this quintet ({__version__}) reads format {FORMAT_VERSION}: re-export the model file with "
            f"`quintet leignn export -m best.pt -o {path.name}`"
        )
    return module, meta


class ExportedPotential(nn.Module):
    """An exported file as a quintet potential (``model(batch, compute_stress)``), neighbour list included."""

    def __init__(self, module: torch.jit.ScriptModule, meta: dict) -> None:
        super().__init__()
        self.module = module
        self.meta = meta

    def forward(self, batch: dict[str, Tensor], compute_stress: bool = False) -> dict[str, Tensor]:
        from quintet.atomistic.neighbors import batch_graph

        edge_index, shift = batch_graph(batch, self.meta["cutoff"], self.meta["max_neighbors"])
        pos = batch[K.POSITIONS]
        idx = batch[K.BATCH] if K.BATCH in batch else torch.zeros_like(batch[K.ATOMIC_NUMBERS])
        cell = batch[K.CELL].reshape(-1, 3, 3)
        args = (pos, batch[K.ATOMIC_NUMBERS], cell, idx, edge_index, shift.to(pos.dtype), cell.shape[0])
        with torch.enable_grad():  # conservative models differentiate the energy
            return self.module(*args, compute_stress)


def exported_calculator(path: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> Any:
    """An ASE calculator (:class:`~quintet.atomistic.calculator.ModelCalculator`) on an exported file."""
    from quintet.atomistic.calculator import ModelCalculator

    module, meta = load_exported(path, device)
    dtype = getattr(torch, meta["dtype"])
    stress = meta["forces"] == "conservative"
    return ModelCalculator(
        ExportedPotential(module, meta), dtype=dtype, device=device, stress=stress, **kwargs
    )


@dataclass
class ExportJob:
    """``quintet leignn export``: a model file (``best.pt``) in, a TorchScript file out."""

    model: str = ""
    out: str = "model.pt"


def export(job: ExportJob) -> Path:
    """Export ``job.model`` to ``job.out`` and check the file reloads with the same metadata."""
    from quintet.leignn.run import load_model

    if not job.model:
        raise ValueError("no model file: give -m/--model best.pt")
    path = export_model(load_model(job.model), job.out)
    load_exported(path)
    return path
