"""Modality encoders: shapes, finite outputs, gradients, missing values and absent
modalities that really carry no information, limits that do, and clear errors."""

from __future__ import annotations

import pytest
import torch

from encoders.modalities import (
    AstrometryEncoder,
    EncoderOutput,
    PhotometryEncoder,
    ScalarSetEncoder,
    SpectrumEncoder,
)

B, Q, L = 5, 4, 50


def _scalar(cls):
    torch.manual_seed(0)
    kw = {"dim": 16, "depth": 1, "heads": 2, "num_tokens": 3}
    if cls is PhotometryEncoder:
        return cls(["G", "J", "H", "Ks"], [0.62, 1.24, 1.65, 2.16], **kw)
    return cls([f"q{i}" for i in range(Q)], **kw)


def _scalar_inputs():
    gen = torch.Generator().manual_seed(1)
    values = torch.randn(B, Q, generator=gen)
    errors = torch.rand(B, Q, generator=gen) * 0.2 + 0.01
    observed = torch.ones(B, Q, dtype=torch.bool)
    observed[1, 2] = False
    observed[3] = False  # object 3 has nothing of this modality
    return values, errors, observed


@pytest.mark.parametrize("cls", [ScalarSetEncoder, PhotometryEncoder, AstrometryEncoder])
def test_scalar_encoders(cls):
    enc = _scalar(cls)
    values, errors, observed = _scalar_inputs()
    out = enc(values, errors, observed)
    assert isinstance(out, EncoderOutput)
    assert out.tokens.shape == (B, 3, 16) and out.z.shape == (B, 16)
    assert out.mask.shape == (B, 3) and torch.isfinite(out.tokens).all()
    assert out.present.tolist() == [True, True, True, False, True]
    assert not out.mask[3].any() and out.mask[0].all()
    # an unobserved entry carries no information
    v2 = values.clone()
    v2[1, 2] += 100.0
    v2[3] += 7.0
    out2 = enc(v2, errors, observed)
    torch.testing.assert_close(out2.tokens, out.tokens)
    # an observed one does, and so do its error and its limit flag
    v2[0, 1] += 1.0
    assert not torch.allclose(enc(v2, errors, observed).z[0], out.z[0])
    e2 = errors.clone()
    e2[0, 1] *= 10
    assert not torch.allclose(enc(values, e2, observed).z[0], out.z[0])
    lim = torch.zeros_like(observed)
    lim[0, 1] = True
    assert not torch.allclose(enc(values, errors, observed, lim).z[0], out.z[0])
    out.z.sum().backward()
    assert all(p.grad is not None for n, p in enc.named_parameters() if "limit" not in n)


def test_photometry_metadata_makes_neighbouring_bands_similar():
    enc = _scalar(PhotometryEncoder)
    assert enc.wavelengths_um == pytest.approx([0.62, 1.24, 1.65, 2.16])
    meta = enc.metadata
    d_hk = (meta[2] - meta[3]).norm()
    d_gk = (meta[0] - meta[3]).norm()
    assert d_hk < d_gk
    with pytest.raises(ValueError, match="one positive wavelength"):
        PhotometryEncoder(["G", "J"], [0.6])


def test_scalar_encoder_errors():
    with pytest.raises(ValueError, match="at least one quantity"):
        ScalarSetEncoder([])
    with pytest.raises(ValueError, match="divisible"):
        ScalarSetEncoder(["a"], dim=10, heads=4)
    enc = ScalarSetEncoder(["a", "b"], dim=8, heads=2)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        enc(torch.zeros(3, 3), torch.zeros(3, 3), torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(Q, F\)"):
        ScalarSetEncoder(["a", "b"], metadata=torch.zeros(3, 2))


def _spectra():
    gen = torch.Generator().manual_seed(2)
    wave = torch.linspace(3300.0, 10200.0, L)
    flux = 1e-15 * (1 + 0.1 * torch.randn(B, L, generator=gen))
    err = torch.full((B, L), 2e-17)
    return wave, flux, err


def test_spectrum_encoder_shapes_masks_and_gradients():
    torch.manual_seed(0)
    wave, flux, err = _spectra()
    enc = SpectrumEncoder(wave, patch=8, dim=16, depth=1, heads=2, num_tokens=2)
    assert enc.num_patches == 7  # 50 pixels padded to 56
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 10:30] = False
    mask[2] = False  # no spectrum
    out = enc(flux, err, mask)
    assert out.tokens.shape == (B, 2, 16) and torch.isfinite(out.tokens).all()
    assert out.present.tolist() == [True, True, False, True, True]
    f2 = flux.clone()
    f2[1, 10:30] = 1.0  # masked pixels carry nothing
    f2[2] = -5.0
    torch.testing.assert_close(enc(f2, err, mask).tokens, out.tokens)
    nan = flux.clone()
    nan[1, 10:30] = float("nan")  # NaN pixels are masked by default
    torch.testing.assert_close(enc(nan, err, mask).tokens[1], out.tokens[1])
    f3 = flux.clone()
    f3[0, 40] *= 1.5
    assert not torch.allclose(enc(f3, err, mask).z[0], out.z[0])
    out.z.sum().backward()
    assert enc.embed.weight.grad is not None and enc.embed.weight.grad.abs().sum() > 0


def test_spectrum_encoder_errors():
    with pytest.raises(ValueError, match="increasing"):
        SpectrumEncoder(torch.tensor([5000.0, 4000.0]))
    enc = SpectrumEncoder(torch.linspace(4000, 5000, 20), patch=4, dim=8, heads=2)
    with pytest.raises(ValueError, match=r"\(B, 20\)"):
        enc(torch.ones(2, 21), torch.ones(2, 21))
