"""Provenance: package versions and machine description stored with every output."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["machine_info", "package_versions"]

_PACKAGES = (
    "dasbi",
    "torch",
    "numpy",
    "scipy",
    "h5py",
    "astropy",
    "sbi",
    "pot",
    "synphot",
    "dust-extinction",
    "speclite",
    "pyphot",
    "astro-sedpy",
    "lachesis-grids",
    "safetensors",
)


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of dasbi and the libraries whose behaviour affects results."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES + extra:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, GPU (if torch sees one), OS and Python."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "gpu": None,
    }
    import torch

    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info["torch_threads"] = torch.get_num_threads()
    return info
