"""quintet: LEIGNN, DeepRelax, DefiNet, FedAux and MedAugment as one toolkit."""

__version__ = "0.1.0"
__all__ = ["__version__"]
