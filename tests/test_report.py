import numpy as np
import pytest

from cdinn.cli.main import main
from cdinn.io import Result, write_result
from cdinn.physics.geometry import BraggGeometry
from cdinn.prepare import Prepared, write_prepared
from cdinn.report import analyse


@pytest.fixture
def strained(tmp_path):
    # A 150 nm sphere with u = a (r·ĝ)² along G, sampled on the detector (skewed) grid.
    g = BraggGeometry(9.0, 0.5, (110e-6, 110e-6), 0.04, (0.22, 90.0, -5.0), (32.174, 12.6346))
    shape = (48, 48, 48)
    basis = g.real_space_basis(shape)
    m = np.stack(np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")).reshape(3, -1)
    r = basis @ m
    ghat = g.q_bragg() / np.linalg.norm(g.q_bragg())
    s = ghat @ r
    inside = np.linalg.norm(r, axis=0) <= 75.0
    obj = (inside * np.exp(1j * 26.67 * 3e-5 * s**2)).reshape(shape).astype(np.complex64)
    result = Result(obj, inside.reshape(shape), 0.01, provenance={"method": "synthetic"})
    prepared = tmp_path / "prep.cxi"
    write_prepared(prepared, Prepared(np.ones(shape, np.float32), np.zeros(shape, bool), (24, 24, 24), (1, 1, 1), (1, 1, 1),
                                      (3, 3, 3), (3, 3, 3)), g, {"input": "synthetic"})
    res = tmp_path / "res.h5"
    write_result(res, result)
    return result, g, res, prepared


def test_analysis_finds_size_and_strain(strained):
    result, g, _, _ = strained
    crystal = analyse(result, g, threshold=0.5)
    assert np.allclose(crystal.size_nm, 150, rtol=0.15)
    # ε = 2 a (r·ĝ), a = 3e-5 nm⁻¹: percentiles over a uniform ball of radius 75 nm
    ball = np.random.default_rng(0).uniform(-75, 75, (200_000, 3))
    ball = ball[np.linalg.norm(ball, axis=1) <= 75]
    expected = np.percentile(2 * 3e-5 * ball[:, 0] * 100, (1, 50, 99))
    # Computed on the skewed detector grid with the exact chain rule, so no smoothing.
    p1, p50, p99 = crystal.strain_percentiles()
    assert abs(p50) < 0.005
    assert p99 == pytest.approx(expected[2], rel=0.03) and p1 == pytest.approx(expected[0], rel=0.03)
    # The lab-grid map (for display) agrees voxel by voxel away from the surface.
    ax = [(np.arange(n) - n // 2) * crystal.voxel_nm for n in crystal.obj.shape]
    z, y, x = np.meshgrid(*ax, indexing="ij")
    ghat = crystal.g_grid
    truth = 2 * 3e-5 * (ghat[0] * z + ghat[1] * y + ghat[2] * x)
    inside = crystal.support & np.isfinite(crystal.strain.strain)
    err = np.abs(crystal.strain.strain - truth)[inside] / np.abs(truth[inside]).max()
    assert np.median(err) < 0.01 and np.percentile(err, 90) < 0.05


def test_report_cli_writes_figure_vti_and_cxi(strained, tmp_path, capsys):
    _, _, res, prepared = strained
    fig, vti, cxi = tmp_path / "fig.png", tmp_path / "crystal.vti", tmp_path / "lab.cxi"
    assert main(["report", str(res), "-o", str(fig), "--geometry", str(prepared), "--vti", str(vti), "--cxi", str(cxi)]) == 0
    assert fig.stat().st_size > 10_000 and cxi.exists()
    head = vti.read_bytes()[:400]
    assert b"ImageData" in head and b"VTKFile" in head
    assert "crystal" in capsys.readouterr().out
    # A CXI image as PyNX/silx/bcdi read it, not only a file cdinn reads back.
    import h5py

    with h5py.File(cxi, "r") as f:
        assert int(f["cxi_version"][()]) == 150 and f["entry_1"].attrs["NX_class"] == "NXentry"
        image = f["entry_1/image_1"]
        assert image["data"].dtype == np.complex64 and image["data"].ndim == 3 and image["mask"].dtype == bool
        assert np.array_equal(f["entry_1/data_1/data"][()], image["data"][()])  # the NXdata shortcut resolves
        assert image["voxel_size"].attrs["units"] == "m" and 1e-9 < float(image["voxel_size"][0]) < 1e-7
        assert image["frame"][()].decode().startswith("lab")
        assert image["extras/strain"].attrs["units"] == "1" and "fraction" in image["extras/strain"].attrs["long_name"]
        assert float(image["process_1/results/chi2"][()]) == pytest.approx(0.01)
        assert image["process_1/program"][()] == b"cdinn"
    from cdinn.io import read_result

    lab = read_result(cxi)
    assert lab.object.shape == image_shape(cxi) and lab.provenance["frame"].startswith("lab") and "strain" in lab.extras


def image_shape(path):
    import h5py

    with h5py.File(path, "r") as f:
        return f["entry_1/image_1/data"].shape


def test_result_carries_its_geometry_to_a_report_elsewhere(strained, tmp_path, capsys):
    # phase records the prepared input's geometry; the result moved away from its input still reports in nm.
    from cdinn.io import read_result

    _, g, _, prepared = strained
    ring = tmp_path / "pattern.cxi"
    obj = strained[0].object
    pattern = np.abs(np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj)))) ** 2
    write_prepared(ring, Prepared(pattern.astype(np.float32), np.zeros(obj.shape, bool), (24, 24, 24), (1, 1, 1), (1, 1, 1),
                                  (3, 3, 3), (3, 3, 3)), g, {"input": "synthetic"})
    out = tmp_path / "moved" / "r.cxi"
    out.parent.mkdir()
    assert main(["phase", str(ring), "-o", str(out), "--recipe", "ER**3", "-q", "--seed", "1"]) == 0
    r = read_result(out)
    assert r.provenance["input"] == str(ring.resolve()) and r.provenance["geometry"]["energy_kev"] == g.energy_kev
    assert len(r.provenance["voxel_size_nm"]) == 3
    ring.unlink()  # the input is gone: the report still has the geometry
    capsys.readouterr()
    assert main(["report", str(out), "-o", str(tmp_path / "fig.png")]) == 0
    assert "nm" in capsys.readouterr().out


def test_report_without_geometry_draws_pixels(tmp_path):
    res = tmp_path / "r2.npz"
    obj = np.zeros((32, 32), np.complex64)
    obj[12:20, 10:22] = 1
    write_result(res, Result(obj, np.abs(obj) > 0, 0.02))
    assert main(["report", str(res), "-o", str(tmp_path / "f.png")]) == 0
    assert main(["report", str(res), "-o", str(tmp_path / "g.png"), "--vti", str(tmp_path / "x.vti")]) == 2


def test_forward_cdi_2d_from_a_beamstopped_pattern_to_a_figure(tmp_path, capsys):
    # prepare (zeros masked, centred by symmetry) -> phase -> report, as for the ESRF logo
    from cdinn.cli.report import _measured_pattern
    from cdinn.io import read_result
    from cdinn.physics import align, fourier_resample, ssim_amplitude
    from cdinn.simulate import faceted_crystal, simulate_pattern

    obj = faceted_crystal((128, 128), oversampling=3.0, phase_range=0.0, seed=6)
    pattern = np.roll(simulate_pattern(obj, photons=1e9, seed=1).numpy(), (5, -3), axis=(0, 1))
    # A beamstop written as zeros, smaller than a speckle (a larger one leaves the low
    # frequencies unconstrained and phase retrieval stalls at chi² ~ 0.05)
    pattern[64 + 5 - 1:64 + 5 + 2, 64 - 3 - 1:64 - 3 + 2] = 0
    raw = tmp_path / "frame.npy"
    np.save(raw, pattern)
    prepared, result, fig = tmp_path / "p.cxi", tmp_path / "r.h5", tmp_path / "f.png"
    assert main(["prepare", str(raw), "--mask-zeros", "-o", str(prepared)]) == 0
    assert "centre at (69, 61)" in capsys.readouterr().out
    assert main(["phase", str(prepared), "-o", str(result), "--seed", "1", "--starts", "2"]) == 0
    res = read_result(result)
    assert res.chi2 < 1e-2
    # The largest FFT-friendly box around the centre: (108, 120) pixels, the same real-space
    # field of view at a coarser resolution; compare with the truth resampled to it.
    assert res.object.shape == (108, 120)
    ref = fourier_resample(obj, (108, 120)).numpy()
    assert ssim_amplitude(align(res.object, ref).aligned, ref) > 0.9
    assert main(["report", str(result), "-o", str(fig)]) == 0
    assert _measured_pattern(read_result(result)).shape == res.object.shape


def test_2d_figures_keep_the_detector_orientation(tmp_path):
    # A big block in the top-left of the array and a small one in the bottom-left: the saved
    # picture must show the big one on top (row 0 at the top, as image viewers show frames).
    import matplotlib.image as mpimg

    from cdinn.report import comparison_figure

    obj = np.zeros((64, 64), np.complex64)
    obj[6:26, 6:26] = 1.0
    obj[44:50, 6:12] = 1.0
    path = comparison_figure(tmp_path / "o.png", [("r", obj)], phase_range=1.0)
    img = mpimg.imread(path)[..., :3].mean(axis=-1)
    from scipy.ndimage import find_objects, label

    dark, _ = label(img < 0.05)  # the amplitude panel is the largest black region of the page
    biggest = np.argmax(np.bincount(dark.ravel())[1:]) + 1
    box = find_objects((dark == biggest).astype(int))[0]
    panel = img[box[0].start + 2 : box[0].stop - 2, box[1].start + 2 : box[1].stop - 2]
    rows, _ = np.nonzero(panel > 0.95)  # the object's white pixels
    assert (rows < panel.shape[0] / 2).sum() > 5 * (rows > panel.shape[0] / 2).sum()


def test_flat_phase_is_not_stretched():
    from cdinn.report.figures import PHASE_RANGE_MIN, flatten_phase, phase_limit

    obj = np.full((16, 16), np.exp(1.3j), np.complex64) * (1 + 0.05 * np.random.default_rng(0).standard_normal((16, 16)))
    flat = flatten_phase(obj)
    assert np.abs(np.angle(flat)).max() < 1e-5  # the global phase is removed
    assert phase_limit(np.angle(flat)) == PHASE_RANGE_MIN and phase_limit(np.angle(flat), 0.1) == 0.1
