"""Shared atomistic layer for LEIGNN, DeepRelax and DefiNet.

Structures travel as a ``dict[str, Tensor]`` keyed by the names in :mod:`quintet.atomistic.keys`.
"""
