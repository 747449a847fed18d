"""The shared scalar–vector backbone blocks (materials spec §2.1)."""

from quintet.atomistic.nn.backbone import ScalarVectorBackbone
from quintet.atomistic.nn.blocks import (
    AtomEmbedding,
    GatedUpdate,
    GlobalScalar,
    GlobalVector,
    PaiNNMessage,
    PaiNNUpdate,
    ScalarReadout,
    ScaledSiLU,
    VectorActivation,
    VectorReadout,
    mlp,
)
from quintet.atomistic.nn.compile import CompiledModel
from quintet.atomistic.nn.normalisation import EnergyNormalisation
from quintet.atomistic.nn.radial import GaussianRBF, PolynomialEnvelope, RadialBasis
from quintet.atomistic.nn.scatter import scatter_mean, scatter_sum

__all__ = [
    "AtomEmbedding",
    "CompiledModel",
    "EnergyNormalisation",
    "GatedUpdate",
    "GaussianRBF",
    "GlobalScalar",
    "GlobalVector",
    "PaiNNMessage",
    "PaiNNUpdate",
    "PolynomialEnvelope",
    "RadialBasis",
    "ScalarReadout",
    "ScalarVectorBackbone",
    "ScaledSiLU",
    "VectorActivation",
    "VectorReadout",
    "mlp",
    "scatter_mean",
    "scatter_sum",
]
