"""Modality encoders and alignment losses (contrastive, optimal transport, pair).

This package never imports :mod:`dasbi`.
"""

__all__: list[str] = []
