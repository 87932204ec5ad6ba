import shutil

import numpy as np
import pytest
import tifffile

from cdinn.cli.main import main
from cdinn.errors import InputError
from cdinn.io import read_pattern
from cdinn.io.scan import load_scan, parse_roi, read_spec
from cdinn.physics import estimate_oversampling
from cdinn.prepare import block_dct_resample, bin_pattern, fft_friendly, find_centre, prepare_pattern, resample_pattern, read_geometry
from cdinn.simulate import faceted_crystal, simulate_pattern

SCAN54 = "aps-34idc-au111-scan54"


@pytest.fixture(scope="module")
def pattern3d():
    # A 24-voxel crystal in a 96³ array: oversampling about 4 per axis; peak moved off-centre.
    obj = faceted_crystal((96, 96, 96), oversampling=4.0, phase_range=1.0, seed=2)
    return np.roll(simulate_pattern(obj, photons=1e9, seed=1).numpy(), (3, -5, 2), axis=(0, 1, 2))


def test_fft_friendly_and_binning():
    assert fft_friendly(254) == 250 and fft_friendly(198) == 192 and fft_friendly(64) == 64
    data = np.arange(64, dtype=np.float32).reshape(8, 8)
    binned, mask = bin_pattern(data, np.zeros_like(data, bool), (2, 2))
    assert binned.shape == (4, 4) and binned.sum() == data.sum() and not mask.any()


@pytest.mark.parametrize("method", ["fourier", "dct"])
@pytest.mark.parametrize("target", [2.0, 3.0])
def test_preparation_keeps_the_oversampling_it_claims(pattern3d, target, method):
    measured = estimate_oversampling(pattern3d[3:93, 3:93, 3:93])
    p = prepare_pattern(pattern3d, size=24, oversampling=target, method=method)
    assert p.intensity.shape == (24, 24, 24) and not p.notes
    assert np.unravel_index(np.argmax(p.intensity), p.intensity.shape) == (12, 12, 12)  # peak centred
    # up to rounding to whole pixels (to whole pixels per block of 8 with dct)
    assert np.allclose(p.oversampling, target, rtol=0.05 if method == "fourier" else 0.1)
    assert np.allclose(estimate_oversampling(p.intensity), p.oversampling, rtol=0.12)
    assert np.allclose(p.oversampling_input, measured, rtol=0.12)


def test_block_dct_resampling_keeps_counts_and_matches_fourier(pattern3d):
    region = pattern3d[:, :, :]
    dct = block_dct_resample(region, (64, 64, 64))  # 12 measured pixels per block of 8
    ref = resample_pattern(region, (64, 64, 64))
    assert dct.sum() == pytest.approx(region.sum(), rel=1e-5) and dct.min() >= 0
    assert np.allclose(estimate_oversampling(dct), np.asarray(estimate_oversampling(region)) / 1.5, rtol=0.05)
    centre = (slice(24, 40),) * 3
    assert np.corrcoef(dct[centre].ravel(), ref[centre].ravel())[0, 1] > 0.98
    with pytest.raises(InputError, match="DCT blocks"):
        block_dct_resample(region[:, :, :95], (64, 64, 64))
    with pytest.raises(InputError, match="resampling method"):
        prepare_pattern(pattern3d, size=24, oversampling=2.0, method="lanczos")


def test_friedel_centring_finds_a_forward_pattern_behind_a_beamstop():
    obj = faceted_crystal((128, 128), oversampling=3.0, phase_range=0.0, seed=4)
    pattern = np.roll(simulate_pattern(obj, photons=1e8, seed=2).numpy(), (7, -11), axis=(0, 1))
    mask = np.zeros(pattern.shape, bool)
    mask[64 + 7 - 6:64 + 7 + 6, 64 - 11 - 9:64 - 11 + 9] = True  # beamstop over the centre
    mask[:, 100:103] = True  # a module gap
    data = np.where(mask, 0, pattern)
    assert find_centre(data, mask, "friedel") == (71, 53)
    assert find_centre(data, mask, "max") != (71, 53)  # the brightest pixel is at the beamstop's edge
    p = prepare_pattern(data, mask)  # auto: friedel in 2D
    assert p.peak == (71, 53) and p.mask[p.intensity.shape[0] // 2, p.intensity.shape[1] // 2]
    assert any("beamstop" in note for note in p.notes)
    with pytest.raises(InputError, match="centring"):
        find_centre(data, mask, "middle")


def test_short_axis_keeps_a_higher_oversampling_and_says_so(pattern3d):
    p = prepare_pattern(pattern3d[40:60], size=(16, 32, 32), oversampling=2.0)
    assert p.oversampling[0] > 2.0 and p.notes and "axis 0" in p.notes[0]


def test_bad_arguments(pattern3d):
    with pytest.raises(InputError, match="oversampling"):
        prepare_pattern(pattern3d, size=32, oversampling=0.5)
    with pytest.raises(InputError, match="mask shape"):
        prepare_pattern(pattern3d, mask=np.zeros((4, 4), bool))
    with pytest.raises(InputError, match="ROW0"):
        parse_roi("0-256")


def test_missing_frames_are_reported(tmp_path):
    for i in (0, 1, 3):
        tifffile.imwrite(tmp_path / f"scan_{i:05d}.tif", np.ones((8, 8), np.int32))
    with pytest.raises(InputError, match="1 frame.*missing.*number 2"):
        load_scan(tmp_path)


@pytest.fixture
def scan54(shared_data):
    path = shared_data / SCAN54
    if not path.is_dir():
        pytest.skip("scan 54 data absent")
    return path


def test_wrong_scan_number_and_shape_mismatch(scan54, tmp_path):
    with pytest.raises(InputError, match="no scan 9999"):
        read_spec(scan54 / "example.spec", 9999)
    frames = tmp_path / "frames"
    frames.mkdir()
    for f in sorted((scan54 / "AD34idcTIM2_example/Staff20-1a_S0054").iterdir())[:4]:
        shutil.copy(f, frames / f.name)
    with pytest.raises(InputError, match="--roi"):
        load_scan(frames, dark=scan54 / "dark.tif")
    with pytest.raises(InputError, match="4 frames but SPEC scan 54 recorded 201"):
        load_scan(frames, spec_file=scan54 / "example.spec", scan=54)


def test_scan54_loads_and_prepares(scan54, tmp_path, capsys):
    out = tmp_path / "s54.cxi"
    code = main([
        "prepare", str(scan54 / "AD34idcTIM2_example/Staff20-1a_S0054"), "--spec", str(scan54 / "example.spec"),
        "--scan", "54", "--dark", str(scan54 / "dark.tif"), "--flat", str(scan54 / "whitefield.tif"),
        "--roi", "0:256,0:256", "--size", "64", "--oversampling", "3", "-o", str(out),
    ])
    assert code == 0
    intensity, mask = read_pattern(out)
    assert intensity.shape == (64, 64, 64) and mask is not None and mask.sum() < 0.01 * mask.size
    assert np.unravel_index(np.argmax(intensity), intensity.shape) == pytest.approx((32, 32, 32), abs=1)
    g = read_geometry(out)
    assert g.energy_kev == 9.0 and g.distance_m == 0.5 and g.detector_angles_deg == (32.174, 12.6346)
    assert np.linalg.norm(g.q_bragg()) == pytest.approx(26.9, abs=0.1)  # Au 111: 26.67 nm⁻¹ at a = 0.408 nm
    assert "oversampling 3.88 x 3.01 x 3.00" in capsys.readouterr().out


def test_prepare_cli_errors_are_one_line(scan54, tmp_path, capsys):
    out = tmp_path / "x.cxi"
    code = main(["prepare", str(scan54 / "AD34idcTIM2_example/Staff20-1a_S0054"), "--spec", str(scan54 / "example.spec"),
                 "--scan", "7777", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no scan 7777" in err and len(err.splitlines()) == 1 and not out.exists()


def test_esrf_logo_prepares_centred_with_its_beamstop_masked(shared_data, tmp_path, capsys):
    logo = shared_data / "esrf-id10-logo-2d"
    if not logo.is_dir():
        pytest.skip("ESRF logo data absent")
    out = tmp_path / "logo.cxi"
    assert main(["prepare", str(logo / "logo5mu_20sec.edf"), "--mask-zeros", "-o", str(out)]) == 0
    intensity, mask = read_pattern(out)
    raw = read_pattern(logo / "logo5mu_20sec.edf")[0]
    assert intensity.shape == (512, 512) and mask.sum() == (raw == 0).sum()
    assert mask[256, 256] and "centre at (256, 256)" in capsys.readouterr().out


def test_prepare_cli_block_dct_and_centring_options(pattern3d, tmp_path, capsys):
    raw, out = tmp_path / "stack.npy", tmp_path / "dct.cxi"
    np.save(raw, pattern3d)
    assert main(["prepare", str(raw), "--size", "24", "--oversampling", "2", "--resample", "dct", "--centre", "max", "-o", str(out)]) == 0
    intensity, _ = read_pattern(out)
    assert intensity.shape == (24, 24, 24)
    assert np.unravel_index(np.argmax(intensity), intensity.shape) == (12, 12, 12)
    assert np.allclose(estimate_oversampling(intensity), 2.0, rtol=0.15)
    with pytest.raises(SystemExit) as exit_:  # argparse rejects an unknown method before anything runs
        main(["prepare", str(raw), "--resample", "wavelet", "-o", str(tmp_path / "x.cxi")])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err
