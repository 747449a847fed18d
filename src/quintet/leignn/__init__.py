"""LEIGNN: lightweight equivariant interatomic potential (energy, forces, stress) usable from ASE."""

from quintet.leignn.model import LEIGNN, LEIGNNModelConfig

__all__ = ["LEIGNN", "LEIGNNModelConfig"]
