"""ERF metrics on synthetic maps whose answers are known in closed form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rflens.erf.metrics import (HCA_THRESHOLDS, box_outside_fraction, central_extent, compute_metrics,
                            fit_gaussian_1d, gaussian_fit, gaussian_outside_fraction,
                            high_contribution_area, log_scale, mass_radius, moments, reference_pixel)


def gaussian_map(shape, center, sigma):
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return np.exp(-sum((g - c) ** 2 / (2 * s**2) for g, c, s in zip(grids, center, sigma)))


def square_map(size, lo, side):
    m = np.zeros((size, size))
    m[lo:lo + side, lo:lo + side] = 1.0
    return m


# --- Gaussian fit and moments ---------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [(3.0, 3.0), (6.5, 2.5), (12.0, 9.0)])
def test_gaussian_fit_recovers_known_sigma_and_centre(sigma):
    m = gaussian_map((129, 121), (64.0, 57.3), sigma)
    fits = gaussian_fit(m)
    for fit, s, c in zip(fits, sigma, (64.0, 57.3)):
        assert fit.sigma == pytest.approx(s, rel=1e-6)
        assert fit.center == pytest.approx(c, abs=1e-6)
        assert fit.r2 == pytest.approx(1.0, abs=1e-9)


def test_gaussian_fit_on_a_flat_profile_has_poor_r2():
    fit = fit_gaussian_1d(np.r_[np.zeros(40), np.ones(41), np.zeros(40)])
    assert fit.r2 < 0.95  # a box is not a Gaussian


def test_moments_of_a_uniform_run_are_the_discrete_uniform_ones():
    y = np.zeros(50)
    y[10:31] = 2.0  # 21 pixels: mean 20, variance (21^2 - 1)/12
    mean, std = moments(y)
    assert mean[0] == pytest.approx(20.0)
    assert std[0] ** 2 == pytest.approx((21**2 - 1) / 12)


def test_degenerate_maps_give_nan_not_errors():
    zero = np.zeros((9, 9))
    m = compute_metrics(zero)
    assert all(math.isnan(v) for v in m.sigma + m.std + m.extent[0.95])
    assert all(math.isnan(v) for v in m.hca_raw.values())
    assert all(v is None for v in m.hca_side_raw.values())
    assert math.isnan(m.mass_radius[0.5])
    delta = np.zeros((9, 9))
    delta[4, 4] = 1.0
    d = compute_metrics(delta)
    assert d.sigma == (0.0, 0.0) and d.center == (4.0, 4.0)
    assert d.mass_radius[0.95] == 0.0
    assert d.hca_side_raw[0.99] == 1


# --- extents, radii ----------------------------------------------------------------------------------

@pytest.mark.parametrize("side", [1, 8, 21, 50])
def test_central_extent_of_a_uniform_square_is_p_times_side(side):
    m = square_map(64, 5, side)
    for p in (0.5, 0.9, 0.95):
        assert central_extent(m, p) == pytest.approx((p * side, p * side), abs=1e-9)


def test_central_extent_of_a_gaussian_matches_the_normal_quantile():
    m = gaussian_map((201,), (100.0,), (10.0,))
    z = 1.959963984540054  # 97.5 % normal quantile
    # pixel-sampled Gaussian spread over unit pixels: variance sigma^2 + 1/12
    assert central_extent(m, 0.95)[0] == pytest.approx(2 * z * math.sqrt(100 + 1 / 12), abs=0.05)


@pytest.mark.parametrize("p", [0.5, 0.9, 0.95])
def test_mass_radius_of_an_isotropic_gaussian(p):
    sigma = 10.0
    m = gaussian_map((161, 161), (80.0, 80.0), (sigma, sigma))
    # mass within r of a 2-D isotropic Gaussian: 1 - exp(-r^2 / (2 sigma^2))
    expected = sigma * math.sqrt(-2 * math.log(1 - p))
    assert mass_radius(m, p, (80.0, 80.0)) == pytest.approx(expected, abs=0.25)  # pixel grid


def test_mass_radius_of_a_disk_counts_pixel_centres():
    m = np.zeros((41, 41))
    yy, xx = np.mgrid[:41, :41]
    r = np.hypot(yy - 20, xx - 20)
    m[r <= 5] = 1.0
    assert mass_radius(m, 1.0, (20.0, 20.0)) == 5.0
    assert mass_radius(m, 0.999, (20.0, 20.0)) == 5.0


# --- high-contribution area ratio -------------------------------------------------------------------

@pytest.mark.parametrize("side", [9, 21, 35])
def test_area_ratio_of_a_uniform_square_is_known(side):
    size = 101
    lo = 50 - side // 2
    m = square_map(size, lo, side)
    for t in HCA_THRESHOLDS:
        # the smallest odd a with (a/side)^2 > t (a <= side)
        a = next(a for a in range(1, side + 1, 2) if (a / side) ** 2 > t)
        got_side, ratio = high_contribution_area(m, t, (50, 50))
        assert got_side == a
        assert ratio == pytest.approx(a * a / size**2)


def test_area_ratio_threshold_never_exceeded_is_nan():
    m = square_map(31, 10, 11)
    side, ratio = high_contribution_area(m, 1.0, (15, 15))
    assert side is None and math.isnan(ratio)


def test_area_ratio_clips_the_square_to_the_input():
    m = np.ones((10, 20))  # the square must grow past the short side
    side, ratio = high_contribution_area(m, 0.9, (5, 10))
    # half-width i: rows [max(5-i,0), min(5+i,9)], columns [10-i, 10+i]; need mass > 0.9 * 200
    i = next(i for i in range(20)
             if (min(5 + i, 9) - max(5 - i, 0) + 1) * (min(10 + i, 19) - max(10 - i, 0) + 1) > 180)
    rows = min(5 + i, 9) - max(5 - i, 0) + 1
    cols = min(10 + i, 19) - max(10 - i, 0) + 1
    assert side == 2 * i + 1
    assert ratio == pytest.approx(rows * cols / 200)


def test_log10_scaling_is_replknets():
    rng = np.random.default_rng(0)
    m = rng.exponential(50.0, size=(33, 33))
    np.testing.assert_allclose(log_scale(m), np.log10(m + 1.0))
    scaled = np.log10(m + 1.0)
    for t in HCA_THRESHOLDS:
        assert high_contribution_area(m, t, (16, 16), "log10") == high_contribution_area(scaled, t, (16, 16))


def test_log10_scaling_flattens_a_peaked_map():
    m = gaussian_map((101, 101), (50.0, 50.0), (5.0, 5.0)) * 1e4
    raw = high_contribution_area(m, 0.5, (50, 50))[1]
    logged = high_contribution_area(m, 0.5, (50, 50), "log10")[1]
    assert logged > raw


# --- outside fractions ------------------------------------------------------------------------------

def test_gaussian_centred_on_the_border_has_half_its_mass_outside_per_axis():
    m = gaussian_map((60, 200), (-0.5, 100.0), (6.0, 6.0))
    fits = gaussian_fit(np.where(np.isfinite(m), m, 0))
    # fit the visible half: the centre lies on the border, so half the mass is outside
    assert gaussian_outside_fraction(fits, m.shape) == pytest.approx(0.5, abs=1e-3)


def test_gaussian_well_inside_has_nothing_outside():
    m = gaussian_map((101, 101), (50.0, 50.0), (4.0, 4.0))
    assert gaussian_outside_fraction(gaussian_fit(m), m.shape) < 1e-20


def test_box_outside_fraction():
    assert box_outside_fraction(((-5, 14), (0, 9)), (10, 10)) == pytest.approx(0.5)
    assert box_outside_fraction(((2, 5), (2, 5)), (10, 10)) == 0.0
    assert box_outside_fraction(((-10, 19), (-10, 19)), (10, 10)) == pytest.approx(1 - 1 / 9)


# --- N-D, reference pixel, serialisation -------------------------------------------------------------

def test_one_and_three_dimensional_maps():
    one = gaussian_map((81,), (40.0,), (5.0,))
    m1 = compute_metrics(one, trf_size=(81,))
    assert m1.sigma[0] == pytest.approx(5.0, rel=1e-6)
    assert m1.erf_trf_ratio[0] == pytest.approx(central_extent(one, 0.95)[0] / 81)
    cube = np.zeros((11, 11, 11))
    cube[3:8, 3:8, 3:8] = 1.0  # side 5 around (5, 5, 5)
    m3 = compute_metrics(cube)
    assert m3.hca_side_raw[0.5] == 5  # 3^3/5^3 = 0.216 < 0.5
    assert m3.extent[0.95] == pytest.approx((4.75, 4.75, 4.75))


def test_reference_pixel_rounds_halves_down():
    m = np.ones((8, 8))
    assert reference_pixel(m, (3.5, 4.5)) == (3, 4)
    assert reference_pixel(m) == (3, 3)  # centre of mass 3.5
    assert reference_pixel(m, (-7.0, 20.0)) == (0, 7)


def test_erf_trf_ratio_of_a_flat_field_filling_its_trf_is_095():
    m = square_map(40, 10, 15)
    metrics = compute_metrics(m, trf_size=(15, 15), trf_box=((10, 24), (10, 24)))
    assert metrics.erf_trf_ratio == pytest.approx((0.95, 0.95))
    assert metrics.trf_outside_fraction == 0.0


def test_to_dict_is_json_and_states_scalings():
    metrics = compute_metrics(np.zeros((5, 5)))
    d = metrics.to_dict()
    text = json.dumps(d, allow_nan=False)  # NaN became null
    assert "NaN" not in text
    assert d["high_contribution_area_ratio"]["log10"]["scaling"].startswith("log10(x + 1)")
    for key in ("gaussian", "moments", "mass_radius", "extent"):
        assert "scaling" in d[key]
    assert set(d["high_contribution_area_ratio"]["raw"]) == {"scaling", "20", "30", "50", "99"}


def test_negative_or_nonfinite_maps_are_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        compute_metrics(-np.ones((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(np.full((3, 3), np.nan))


# --- scipy fits, the Gaussian criteria ---------------------------------------------------------------

def test_joint_fit_recovers_an_anisotropic_gaussian_and_the_marginal_amplitude():
    from rflens.erf.gaussian import fit_gaussian_nd

    m = gaussian_map((101, 91), (48.0, 40.5), (7.0, 4.0))
    joint = fit_gaussian_nd(m)
    assert joint.sigma == pytest.approx((7.0, 4.0), rel=1e-6)
    assert joint.center == pytest.approx((48.0, 40.5), abs=1e-6)
    assert joint.r2 == pytest.approx(1.0, abs=1e-9)
    # a sampled Gaussian of sigma >= 3 sums to sigma*sqrt(2 pi) (to ~1e-10): scaled to sum 1, its
    # peak is 1 / (sigma sqrt(2 pi)), per axis and jointly
    assert joint.amplitude == pytest.approx(1 / (2 * math.pi * 7.0 * 4.0), rel=1e-6)
    metrics = compute_metrics(m)
    assert metrics.amplitude == pytest.approx((1 / (7.0 * math.sqrt(2 * math.pi)),
                                               1 / (4.0 * math.sqrt(2 * math.pi))), rel=1e-6)
    assert metrics.gaussian and metrics.joint_r2 == pytest.approx(1.0, abs=1e-9)


def test_maps_that_are_not_gaussian_get_no_sigma_or_tail_estimate():
    two_peaks = np.zeros((60, 60))
    two_peaks[5, 5] = two_peaks[54, 54] = 1.0  # R^2 of any single Gaussian is about 0
    m = compute_metrics(two_peaks)
    assert max(m.r2) < 0.2 and not m.gaussian
    assert math.isnan(m.outside_fraction) and "not Gaussian" in m.outside_method
    box = compute_metrics(square_map(64, 10, 40))  # a flat field: marginal R^2 0.83 < 0.9
    assert not box.gaussian and 0.7 < box.r2[0] < 0.9
    smooth = compute_metrics(gaussian_map((64, 64), (30.0, 33.0), (5.0, 6.0)))
    assert smooth.gaussian and math.isfinite(smooth.outside_fraction)
    assert smooth.to_dict()["gaussian"]["is_gaussian"] is True


def test_excess_kurtosis_of_path_counts_is_minus_three_halves_over_n():
    from rflens.erf.gaussian import excess_kurtosis

    for n in (1, 2, 5, 12):
        counts = np.array([1.0])
        for _ in range(n):
            counts = np.convolve(counts, np.ones(3))  # n stacked 3-wide uniform kernels
        assert excess_kurtosis(counts) == pytest.approx(-1.5 / n, rel=1e-9)
    assert excess_kurtosis(np.ones(31)) == pytest.approx(-1.2 * (31**2 + 1) / (31**2 - 1), rel=1e-9)


@pytest.mark.parametrize("n, shaped", [(1, False), (2, False), (6, True), (20, True)])
def test_deep_small_kernel_stacks_are_gaussian_shaped_and_shallow_ones_are_not(n, shaped):
    counts = np.array([1.0])
    for _ in range(n):
        counts = np.convolve(counts, np.ones(3))
    m = np.pad(np.outer(counts, counts), 10)
    metrics = compute_metrics(m)
    assert metrics.gaussian_shaped is shaped, metrics.shape_reason


def test_one_large_kernel_is_not_gaussian_shaped():
    m = np.pad(np.ones((31, 31)), 20)
    metrics = compute_metrics(m)
    assert not metrics.gaussian_shaped and "kurtosis -1.20" in metrics.shape_reason


# --- the published read-outs ---------------------------------------------------------------------------

def published_rectangles(data: np.ndarray, thresholds) -> dict:
    """RepLKNet's analyze_erf as published, restated: A = log10(x + 1) / max; squares of side 2i+1
    around (h//2, w//2) for i = 1 .. h//2 - 1; the first whose share of A exceeds t."""
    a = np.log10(data + 1)
    a = a / a.max()
    h, w = a.shape
    out = {}
    for t in thresholds:
        out[t] = None
        for i in range(1, h // 2):
            share = a[h // 2 - i:h // 2 + i + 1, w // 2 - i:w // 2 + i + 1].sum() / a.sum()
            if share > t:
                out[t] = (2 * i + 1, (2 * i + 1) ** 2 / (h * w))
                break
    return out


def test_replknet_area_ratios_match_the_published_definition():
    from rflens.erf.protocols import REPLKNET_THRESHOLDS, replknet_area_ratios

    rng = np.random.default_rng(3)
    m = gaussian_map((96, 96), (47.0, 49.0), (9.0, 12.0)) * 300 + rng.exponential(0.5, (96, 96))
    got = replknet_area_ratios(m, (48, 48))
    want = published_rectangles(m, REPLKNET_THRESHOLDS)
    for t in REPLKNET_THRESHOLDS:
        if want[t] is None:
            assert got[t][0] is None and math.isnan(got[t][1])
        else:
            assert got[t][0] == want[t][0] and got[t][1] == pytest.approx(want[t][1])
    flat = np.ones((96, 96))  # the largest square tried, 95 x 95, holds (95/96)^2 < 0.99
    assert published_rectangles(flat, (0.99,))[0.99] is None
    assert replknet_area_ratios(flat, (48, 48))[0.99][0] is None


def test_replknet_squares_stay_inside_the_input_around_an_off_centre_unit():
    from rflens.erf.protocols import replknet_area_ratios

    m = np.zeros((40, 40))
    m[8:13, 8:13] = 1e6  # all mass around pixel (10, 10)
    got = replknet_area_ratios(m, (10, 10))
    assert got[0.5] == (5, 25 / 1600)
    # a threshold the squares inside the input (i <= 10 from pixel 10) cannot pass
    m[28:40, 28:40] = 1e6  # most of A lies beyond the squares around (10, 10) that fit
    side, ratio = replknet_area_ratios(m, (10, 10))[0.5]
    assert side is None and math.isnan(ratio)


def test_radial_mass_counts_pixel_centres_within_r():
    from rflens.erf.protocols import radial_mass

    yy, xx = np.mgrid[:61, :61]
    dist = np.hypot(yy - 30.5, xx - 29.0)
    m = np.where(dist <= 20, 1.0, 0.0)
    got = radial_mass(m, (30.5, 29.0), (5, 10, 20, 30))
    total = m.sum()
    for r in (5, 10, 20):
        assert got[r] == pytest.approx(np.count_nonzero(dist <= r) / total)
    assert got[30] == pytest.approx(1.0)


def test_centre_offset_is_measured_from_the_input_centre():
    m = gaussian_map((10, 12), (3.5, 5.5), (1.5, 1.5))
    metrics = compute_metrics(m, center=(3.5, 5.5))
    assert metrics.center_offset == pytest.approx((-1.0, 0.0))
    assert metrics.center_distance == pytest.approx(1.0)
    d = metrics.to_dict()
    assert d["center_offset"]["distance"] == pytest.approx(1.0)
    assert set(d["radial_mass"]) == {"scaling", "5", "10", "20", "30", "40", "60", "80"}
    assert set(d["replknet2022"]) == {"definition", "20", "30", "50", "99"}
