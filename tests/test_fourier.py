import numpy as np
import torch

from cdinn.physics import crop_to, far_field_modulus, forward, intensity, inverse, pad_to, twin


def test_parseval_and_roundtrip(crystal3d):
    f = forward(crystal3d)
    assert torch.allclose(f.abs().square().sum(), crystal3d.abs().square().sum(), rtol=1e-4)
    assert torch.allclose(inverse(f), crystal3d, atol=1e-5)


def test_zero_frequency_at_centre():
    obj = torch.zeros(16, 16, dtype=torch.complex64)
    obj[4:9, 5:12] = 1.0
    i = intensity(obj)
    assert tuple(np.unravel_index(int(i.argmax()), i.shape)) == (8, 8)
    assert torch.isclose(i[8, 8], torch.tensor(35.0**2 / 256), rtol=1e-5)


def test_friedel_symmetry_of_real_object():
    obj = torch.rand(24, 24, 24)
    i = intensity(obj.to(torch.complex64))
    # I(-q): index k -> (n - k) mod n around the centre n // 2.
    mirrored = torch.roll(torch.flip(i, dims=(0, 1, 2)), shifts=(1, 1, 1), dims=(0, 1, 2))
    assert torch.allclose(i, mirrored, rtol=1e-4, atol=1e-4)


def test_twin_and_translation_leave_intensity_unchanged(crystal2d):
    i = intensity(crystal2d)
    assert torch.allclose(intensity(twin(crystal2d)), i, rtol=1e-4, atol=1e-4)
    assert torch.allclose(intensity(torch.roll(crystal2d, (3, -5), (0, 1))), i, rtol=1e-4, atol=1e-4)


def test_far_field_modulus_is_that_of_the_forward_model():
    gen = torch.Generator().manual_seed(3)
    for shape, ndim in (((2, 15, 16, 17), 3), ((3, 20, 21), 2), ((9, 12), 2)):
        obj = torch.randn(shape, dtype=torch.complex64, generator=gen)
        expected = forward(obj, ndim).abs()
        assert torch.allclose(far_field_modulus(obj, ndim), expected, rtol=1e-5, atol=1e-6 * float(expected.max()))


def test_batched_equals_unbatched(crystal2d):
    batch = torch.stack([crystal2d, 2 * crystal2d])
    f = forward(batch, ndim=2)
    assert torch.allclose(f[1], forward(2 * crystal2d), atol=1e-5)


def test_pad_and_crop_keep_the_centre():
    x = torch.arange(9.0).reshape(3, 3)
    padded = pad_to(x, (8, 8))
    assert padded[4, 4] == x[1, 1]
    assert torch.equal(crop_to(padded, (3, 3)), x)
    even = torch.arange(16.0).reshape(4, 4)
    assert pad_to(even, (9, 9))[4, 4] == even[2, 2]


def test_fourier_resample_round_trip_and_level(crystal2d):
    from cdinn.physics import fourier_resample

    up = fourier_resample(crystal2d, (96, 96))
    assert up.shape == (96, 96)
    assert abs(float(up.abs().max()) - float(crystal2d.abs().max())) < 0.1  # values keep their level
    assert torch.allclose(fourier_resample(up, (64, 64)), crystal2d, atol=1e-4)  # band-limited: exact back
    pattern = intensity(crystal2d)
    coarse = fourier_resample(pattern, (32, 32), reciprocal=True).real
    assert coarse.shape == (32, 32) and float(coarse.sum()) > 0
    same = fourier_resample(crystal2d, crystal2d.shape)  # the identity: a new array, the same values
    assert torch.equal(same, crystal2d.to(torch.complex64)) and same.data_ptr() != crystal2d.data_ptr()
