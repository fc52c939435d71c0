r"""Denoising score matching over the latent nodes, with per-example condition masks.

For each example: draw a condition mask (and optionally remove nodes), draw
:math:`t \sim U(t_{min}, 1)` and noise the latent nodes only,
:math:`\tilde x = x_0 + \tilde\sigma_t \varepsilon` (VE-equivalent space), and minimise

.. math:: \mathcal L = \mathbb E\Big[\lambda(t) \sum_{i\ \mathrm{latent}}
          \big(D_\theta(\tilde x; \tilde\sigma_t)_i - x_{0,i}\big)^2\Big],

where :math:`\lambda(t)` is chosen by ``weighting`` (:meth:`dasbi.sde.SDE.loss_weight`):

* ``edm`` (default): :math:`(\tilde\sigma^2+1)/\tilde\sigma^2`, a uniform weight on the
  preconditioned network output (Karras et al. 2022);
* ``g2``: the score-matching weight g(t)² of Song et al. (2021), which for the VE SDE equals
  :math:`1/\tilde\sigma^2` up to a constant (the Simformer's choice);
* ``sigma2``: :math:`1/\tilde\sigma^2` (the "ε-prediction" loss).

On a 2-D linear Gaussian (1,200 steps, small network) the Heun ODE sampler put the
posterior mean at 0.250 with ``g2`` and 0.304 with ``edm`` (truth 0.300): g(t)² gives high
noise levels almost no weight, and the deterministic ODE carries errors made there to the
end. Observed and absent nodes contribute nothing, and neither do upper limits: they are
conditioned on as limit tokens (see :func:`training_state`) or left out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .inputs import ModelInputs
from .masks import ConditionMaskConfig, GraphMasks, sample_condition_masks, sample_dropped_nodes
from .network import ABSENT, LATENT, LIMIT, OBSERVED, Simformer
from .sde import SDE

__all__ = ["DenoisingScoreLoss", "training_state"]


def training_state(
    inputs: ModelInputs, is_param: Tensor, masks: ConditionMaskConfig, generator: torch.Generator
) -> Tensor:
    """Node states (B, N), drawn per example: 1 observed, 2 observed limit, 0 latent, -1 absent.

    Upper limits take part in the condition masks like measured values: conditioned on, they
    become limit tokens; left latent, they are absent (their true value is unknown).
    """
    measured = inputs.present.cpu()
    limit = inputs.limit.cpu() & ~measured
    kept = sample_dropped_nodes(measured | limit, is_param.cpu(), masks, generator)
    observed = sample_condition_masks(kept, is_param.cpu(), masks, generator)
    state = torch.full(kept.shape, ABSENT, dtype=torch.long)
    state[kept & measured] = LATENT
    state[observed & measured] = OBSERVED
    state[observed & limit] = LIMIT
    return state.to(inputs.values.device)


class DenoisingScoreLoss(nn.Module):
    """The Simformer's training objective.

    Args:
        net: The network.
        sde: Noise process.
        weighting: ``"g2"`` (default) or ``"sigma2"``.
    """

    def __init__(self, net: Simformer, sde: SDE, weighting: str = "g2") -> None:
        super().__init__()
        self.net = net
        self.sde = sde
        self.weighting = weighting

    def forward(
        self,
        inputs: ModelInputs,
        state: Tensor,
        generator: torch.Generator,
        graph: GraphMasks | None = None,
        context: Tensor | None = None,
        context_valid: Tensor | None = None,
    ) -> Tensor:
        """Per-example losses (B,) for the given node states."""
        g = None if graph is None else graph(state >= OBSERVED)
        cache = self.net.encode(inputs.values, inputs.errors, state, g, context, context_valid)
        x0 = torch.gather(inputs.values, 1, cache.lat_index)
        b, dev = x0.shape[0], x0.device
        u = torch.rand(b, generator=generator).to(dev)
        t = self.sde.t_min + (self.sde.t_max - self.sde.t_min) * u
        sigma = self.sde.sigma(t)
        noise = torch.randn(x0.shape, generator=generator).to(dev)
        x_t = x0 + sigma[:, None] * noise
        denoised = self.net.denoise(cache, x_t, sigma)
        err = ((denoised - x0) ** 2 * cache.lat_valid).sum(dim=1)
        return self.sde.loss_weight(t, self.weighting) * err
