"""Forward simulators for dasbi: toy benchmarks and astronomical forward models.

This package never imports :mod:`dasbi`; its outputs reach dasbi through the HDF5 dataset.
"""

from .base import ObsBlock, SimOutput, Simulator
from .registry import SIMULATORS, get_simulator, register
from .toy import SLCP, GaussianLinear, TwoMoons

__all__ = [
    "SIMULATORS",
    "SLCP",
    "GaussianLinear",
    "ObsBlock",
    "SimOutput",
    "Simulator",
    "TwoMoons",
    "get_simulator",
    "register",
]
