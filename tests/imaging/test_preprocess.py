"""Preprocessing of real DICOM slices (pydicom's own test files) and its refusals.

Every refusal is an UnusableSliceError (an ApplianceError) that names the object and says what to
send instead; the expected values are recomputed here from the pixel data by other means.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from appliance.errors import ApplianceError
from appliance.imaging import INPUT_SIZE, UnusableSliceError, pixels_to_input, slice_to_input
from appliance.imaging.preprocess import resize


def read(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return pydicom.dcmread(path)


def test_ct_slice_becomes_a_normalised_model_input_in_hounsfield_units() -> None:
    ds = read("CT_small.dcm")
    x = slice_to_input(ds)
    assert x.shape == (1, 1, INPUT_SIZE, INPUT_SIZE) and x.dtype == np.float32
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    # 128 x 128 in, 128 x 128 out: the area resampling is the identity; only the scaling acts.
    low, high = np.percentile(hu, [1, 99])
    assert np.allclose(x[0, 0], np.clip((hu - low) / (high - low), -1, 2), atol=1e-5)
    assert abs(np.percentile(x, 1)) < 1e-6 and abs(np.percentile(x, 99) - 1) < 1e-5


def test_rescale_slope_and_intercept_do_not_change_the_input() -> None:
    # The same image stored as raw * 2 - 100 with slope 0.5 and intercept 50 is the same image.
    ds = read("CT_small.dcm")
    before = slice_to_input(ds)
    raw = ds.pixel_array.astype(np.int32)
    ds.RescaleSlope, ds.RescaleIntercept = 0.5, float(ds.RescaleIntercept) + 50.0
    ds.PixelData = (raw * 2 - 100).astype(ds.pixel_array.dtype).tobytes()
    assert np.allclose(slice_to_input(ds), before, atol=1e-5)


def test_monochrome1_is_inverted_so_dense_is_always_bright() -> None:
    ds = read("MR_small.dcm")
    plain = slice_to_input(ds)
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = slice_to_input(ds)
    values = ds.pixel_array.astype(np.float64)
    assert np.allclose(inverted, pixels_to_input(-values), atol=1e-6)
    assert np.corrcoef(plain.ravel(), inverted.ravel())[0, 1] < -0.9


def test_a_large_non_square_radiograph_is_padded_and_area_resampled() -> None:
    ds = read("RG1_UNCR.dcm")
    x = slice_to_input(ds)
    assert x.shape == (1, 1, INPUT_SIZE, INPUT_SIZE) and np.isfinite(x).all()


def test_area_resampling_keeps_the_mean_and_averages_blocks() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((256, 256))
    small = resize(image, 128)
    blocks = image.reshape(128, 2, 128, 2).mean(axis=(1, 3))
    assert np.allclose(small, blocks)
    odd = rng.random((300, 300))
    assert abs(resize(odd, 128).mean() - odd.mean()) < 1e-9


def _rgb() -> Dataset:
    ds = read("SC_rgb.dcm")  # a real RGB secondary capture, routed here as if it were CT
    ds.Modality = "CT"
    return ds


def _colour() -> Dataset:
    ds = read("CT_small.dcm")
    ds.PhotometricInterpretation = "RGB"
    return ds


def _without_pixels() -> Dataset:
    ds = read("CT_small.dcm")
    del ds.PixelData
    return ds


def _multi_frame() -> Dataset:
    return read("emri_small.dcm")


def _segmentation() -> Dataset:
    ds = read("liver_1frame.dcm")
    ds.Modality = "CT"  # even routed as CT, a 1-bit mask is no image
    return ds


def _blank() -> Dataset:
    ds = read("CT_small.dcm")
    ds.PixelData = np.full((ds.Rows, ds.Columns), 40, ds.pixel_array.dtype).tobytes()
    return ds


def _undecodable() -> Dataset:
    ds = read("MR_small_jp2klossless.dcm")
    try:
        _ = ds.pixel_array
    except Exception:
        return read("MR_small_jp2klossless.dcm")
    pytest.skip("a JPEG 2000 decoder is installed here: nothing is undecodable")


def _dose() -> Dataset:
    return read("rtdose_1frame.dcm")


@pytest.mark.parametrize(
    ("make", "says", "hint"),
    [
        (_without_pixels, "has no pixel data", "image object itself"),
        (_colour, "photometric interpretation 'RGB'", "greyscale series"),
        (_rgb, "'RGB'", "greyscale"),
        (_multi_frame, "multi-frame object with 10 frames", "single-frame"),
        (_segmentation, "1-bit pixels", "Route only"),
        (_blank, "blank", "anatomy"),
        (_undecodable, "cannot be decoded here", "uncompressed transfer syntax"),
        (_dose, "modality 'RTDOSE'", "Route only"),
    ],
    ids=["no-pixels", "rgb", "sc-rgb", "multi-frame", "1-bit", "blank", "jpeg2000", "rtdose"],
)
def test_unusable_slices_are_refused_saying_what_and_what_to_do(
    make: object, says: str, hint: str
) -> None:
    ds = make()  # type: ignore[operator]
    with pytest.raises(UnusableSliceError) as caught:
        slice_to_input(ds)
    assert isinstance(caught.value, ApplianceError)
    assert says in caught.value.message
    assert caught.value.hint and hint in caught.value.hint
    assert str(ds.get("SOPInstanceUID", "no SOP instance UID")) in caught.value.message


def test_arrays_that_are_not_one_slice_are_refused() -> None:
    with pytest.raises(UnusableSliceError, match="2-D slice"):
        pixels_to_input(np.ones((4, 64, 64)))
    with pytest.raises(UnusableSliceError, match="at least 16"):
        pixels_to_input(np.arange(80.0).reshape(8, 10))
    with pytest.raises(UnusableSliceError, match="NaN"):
        pixels_to_input(np.full((32, 32), np.nan))
