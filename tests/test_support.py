import numpy as np
import torch

from cdinn.physics import (
    autocorrelation,
    autocorrelation_support,
    estimate_oversampling,
    fill_masked,
    gaussian_blur,
    grow_support,
    intensity,
    recover_masked,
    shrink_wrap,
    threshold_support,
)
from cdinn.physics.fourier import radius_grid


def ball(n=48, r=8.0, ndim=3):
    return (radius_grid((n,) * ndim) <= r).to(torch.complex64)


def test_shrink_wrap_recovers_a_known_object():
    obj = ball()
    support = shrink_wrap(obj, sigma=1.0, threshold=0.5)
    truth = obj.abs() > 0
    iou = (support & truth).sum() / (support | truth).sum()
    assert iou > 0.9
    # A lower threshold gives a looser support that still contains the object.
    loose = shrink_wrap(obj, sigma=2.0, threshold=0.1)
    assert bool((loose | ~truth).all()) and loose.sum() > truth.sum()


def test_gaussian_blur_preserves_mass_and_batches():
    x = torch.zeros(2, 32, 32)
    x[0, 16, 16] = 1.0
    x[1, 3, 3] = 2.0
    y = gaussian_blur(x, 2.0, ndim=2)
    assert torch.allclose(y.sum(dim=(1, 2)), torch.tensor([1.0, 2.0]), atol=1e-5)
    assert y[0, 16, 16] < 0.1 and y[0, 16, 18] > 0.0


def test_autocorrelation_support_is_twice_the_object():
    obj = ball(64, 8.0)
    i = intensity(obj)
    auto = autocorrelation(i)
    assert tuple(np.unravel_index(int(auto.argmax()), auto.shape)) == (32, 32, 32)
    support = autocorrelation_support(i, threshold=0.05)
    assert support[32, 32, 32] and support[32, 32, 32 + 12] and not support[32, 32, 32 + 20]


def test_oversampling_estimate_on_a_box():
    obj = torch.zeros(64, 64, dtype=torch.complex64)
    obj[32 - 8 : 32 + 8, 32 - 4 : 32 + 4] = 1.0  # 16 x 8 pixels in 64 x 64: ratios 4 and 8
    ratios = estimate_oversampling(intensity(obj), threshold=0.02)
    assert abs(ratios[0] - 4.0) < 0.6 and abs(ratios[1] - 8.0) < 1.2


def test_threshold_support_per_batch_item():
    a = torch.stack([torch.linspace(0, 1, 10), torch.linspace(0, 10, 10)])[:, :, None].expand(2, 10, 4)
    s = threshold_support(a, 0.5, ndim=2)
    assert torch.equal(s[0], s[1])


def test_centre_on_support_is_circular_and_batched():
    from cdinn.physics.support import centre_on_support

    sup = torch.zeros(2, 16, 16, dtype=torch.bool)
    sup[0, 0:3, 5:8] = True
    sup[0, 15, 5:8] = True  # wraps around axis 0: circular centre at row 0.5
    sup[1, 10:14, 2:4] = True
    obj = sup.to(torch.complex64) * 2.0
    out, out_sup = centre_on_support(obj, sup)
    for b in range(2):
        rows, cols = torch.nonzero(out_sup[b], as_tuple=True)
        assert abs(float(rows.float().mean()) - 8) <= 0.5 and abs(float(cols.float().mean()) - 8) <= 0.5
        assert torch.equal(out[b].abs() > 0, out_sup[b])
    # items sharing a shift roll together; each lands where rolling it alone puts it
    batch = torch.cat([sup, sup[:1], sup[1:]])
    values = torch.randn(batch.shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(2)) * batch
    out, out_sup = centre_on_support(values, batch)
    for b in range(len(batch)):
        alone, alone_sup = centre_on_support(values[b:b + 1], batch[b:b + 1])
        assert torch.equal(out[b], alone[0]) and torch.equal(out_sup[b], alone_sup[0])
    same, _ = centre_on_support(values[[0, 2]], batch[[0, 2]])  # one shift for the whole batch
    assert torch.equal(same, out[[0, 2]])


def test_autocorrelation_is_the_modulus_of_the_inverse_transform():
    """The half-spectrum computation fills the other half by symmetry: odd and even sizes, batches."""
    from cdinn.physics import inverse

    gen = torch.Generator().manual_seed(3)
    for shape, ndim in (((64, 64, 64), None), ((63, 64, 65), None), ((2, 33, 32), 2), ((41, 40), None)):
        i = torch.rand(shape, generator=gen) * 100
        reference = inverse(i.to(torch.complex64), ndim).abs()
        assert torch.allclose(autocorrelation(i, ndim), reference, rtol=1e-4, atol=1e-4 * float(reference.max()))


def test_largest_component_counts_diagonal_neighbours_and_keeps_the_biggest():
    from cdinn.physics import largest_component

    sup = torch.zeros(20, 20, 20, dtype=torch.bool)
    sup[2:5, 2:5, 2:5] = True  # 27 voxels
    sup[5, 5, 5] = True  # touches the cube at a corner only: the same crystal (full connectivity)
    sup[10:13, 10:13, 14:16] = True  # 18 voxels, separate
    out = largest_component(sup)
    assert int(out.sum()) == 28 and bool(out[5, 5, 5]) and not bool(out[10:13, 10:13, 14:16].any())
    single = torch.zeros(8, 8, dtype=torch.bool)
    single[7, 0:3] = True  # on the border, one component: returned as it is
    assert torch.equal(largest_component(single), single)
    assert not bool(largest_component(torch.zeros(4, 4, dtype=torch.bool)).any())


def test_largest_component_of_a_batch_is_that_of_each_item():
    """One labelling call for a batch: no component spans two items, each keeps its own largest."""
    from cdinn.physics import largest_component

    gen = torch.Generator().manual_seed(5)
    batch = torch.rand(6, 24, 24, generator=gen) > 0.55  # many components per item
    batch[3] = False  # an empty item stays empty
    batch[4] = False
    batch[4, 2:6, 2:6] = True  # one component: unchanged
    batch[5, :, 10:] = batch[0, :, 10:]  # the same voxels in two items must not connect them
    out = largest_component(batch, ndim=2)
    for item, got in zip(batch, out):
        assert torch.equal(got, largest_component(item))
    assert not bool(out[3].any()) and torch.equal(out[4], batch[4])
    # each item's kept component is its largest: removing it leaves only smaller ones
    from scipy import ndimage

    for item, got in zip(batch[:3], out[:3]):
        labels, n = ndimage.label(item.numpy(), np.ones((3, 3)))
        sizes = np.bincount(labels.ravel())[1:]
        assert int(got.sum()) == sizes.max()
    volumes = torch.rand(2, 12, 12, 12, generator=gen) > 0.6
    assert torch.equal(largest_component(volumes, ndim=3)[1], largest_component(volumes[1]))


def test_threshold_support_of_a_complex_object_thresholds_its_modulus():
    gen = torch.Generator().manual_seed(5)
    obj = torch.polar(torch.rand(2, 9, 10, 11, generator=gen), 6 * torch.rand(2, 9, 10, 11, generator=gen))
    for threshold in (0.1, 0.5, 0.9):
        assert torch.equal(threshold_support(obj, threshold, 3), threshold_support(obj.abs(), threshold, 3))


def test_grow_support_is_binary_dilation_of_the_whole_grid():
    from scipy import ndimage

    gen = torch.Generator().manual_seed(7)
    blob = torch.rand(24, 20, 22, generator=gen) > 0.97
    edge = torch.zeros(16, 16, dtype=torch.bool)
    edge[0, 3:9] = True  # touches the border: the box is clipped, nothing wraps
    edge[10:15, 15] = True
    for support in (blob, edge, torch.zeros(8, 8, 8, dtype=torch.bool)):
        for voxels in (0, 1, 2, 4):
            expected = ndimage.binary_dilation(support.numpy(), iterations=voxels) if voxels else support.numpy()
            assert np.array_equal(grow_support(support, voxels).numpy(), expected)


def test_masked_pixels_are_recovered_from_the_band_limit():
    """A hole of radius 2 over the brightest speckles of a simulated crystal's pattern: the
    neighbours' fill misses most of the counts there; recovery through the autocorrelation's
    support brings them back within a few percent, leaves measured pixels as they were, and
    works the same on a batch."""
    from cdinn.simulate import faceted_crystal, simulate_pattern

    patterns = torch.stack([simulate_pattern(faceted_crystal((48, 48, 48), oversampling=3.5, phase_range=1.0, seed=s),
                                             photons=1e8, seed=s) for s in (4, 5)])
    hole = radius_grid((48, 48, 48)) <= 2
    holed = patterns.masked_fill(hole, 0.0)
    recovered = recover_masked(holed, hole, ndim=3)

    def error(f):
        return float((f[:, hole] - patterns[:, hole]).norm() / patterns[:, hole].norm())

    assert error(fill_masked(holed, hole.expand_as(holed), ndim=3)) > 0.5
    assert error(recovered) < 0.1
    assert torch.equal(recovered[:, ~hole], holed[:, ~hole])
    assert torch.allclose(recover_masked(holed[1], hole, ndim=3), recovered[1], rtol=1e-4, atol=1e-3)
