"""A DICOM slice into the input of the imaging anomaly model: ``float32 [1, 1, 128, 128]``.

Steps, in order, each chosen so that slices from different scanners look alike to the model:

1. stored values to modality values (Rescale Slope/Intercept or a Modality LUT: Hounsfield units on
   CT), so the same tissue gives the same number whatever the scanner stored;
2. MONOCHROME1 (white is low, as on many CR plates) is negated, so bright always means dense;
3. the slice is padded to a square with its darkest value (no aspect distortion), then
   area-resampled to 128 x 128 (each output pixel is the mean of the input area it covers);
4. values are scaled so the slice's 1st percentile is 0 and its 99th is 1, clipped to [-1, 2]:
   per-slice robust normalisation instead of fixed windows, which differ between scanners and
   between CT, MR and CR. A lesion's contrast in the model card is measured on this scale.

:func:`pixels_to_input` (steps 2-4) is what ``models/imaging-anomaly/build.py`` applies to its
training slices, so the box prepares slices exactly as the model was trained on them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from appliance.imaging.errors import UnusableSliceError

INPUT_SIZE = 128
PERCENTILES = (1.0, 99.0)
CLIP = (-1.0, 2.0)
MIN_SIDE = 16  # below this a slice is a thumbnail or an icon, not an image to read
MODALITIES = frozenset({"CT", "MR", "CR", "DX"})
GREYSCALE = frozenset({"MONOCHROME1", "MONOCHROME2"})
FloatArray = npt.NDArray[np.float32]
_ROUTE_HINT = "Route only single-frame greyscale CT, MR, CR or DX slices to the imaging model."


def slice_to_input(ds: Dataset) -> FloatArray:
    """The model input for the slice ``ds``: float32 ``[1, 1, INPUT_SIZE, INPUT_SIZE]``.

    Raises UnusableSliceError, saying what is wrong and what to do, for an object without pixel
    data, of another modality, in colour, multi-frame, 1-bit (a segmentation), smaller than
    MIN_SIDE, blank, whose pixel data cannot be decoded here or whose rescale is damaged.
    """
    what = _describe(ds)
    _check_attributes(ds, what)
    pixels = _decode(ds, what)
    # Imported here: pydicom.pixels pulls in its decoder plugins, needed only for real slices.
    from pydicom.pixels.processing import apply_rescale

    try:
        values = np.asarray(apply_rescale(pixels, ds), dtype=np.float64)
    except Exception as exc:  # pydicom raises what its value converters raise (a DS of "x")
        raise UnusableSliceError(
            f"{what}: its rescale (Rescale Slope and Intercept, or Modality LUT) cannot be "
            f"applied: {type(exc).__name__}.",
            "Check the sending modality's export: the rescale attributes are damaged.",
        ) from exc
    invert = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    try:
        return pixels_to_input(values, invert=invert)
    except UnusableSliceError as exc:
        raise UnusableSliceError(f"{what}: {exc.message}", exc.hint) from None


def pixels_to_input(
    pixels: npt.NDArray[Any], *, invert: bool = False, size: int = INPUT_SIZE
) -> FloatArray:
    """Steps 2-4 of the module docstring on a 2-D array of modality values.

    Raises UnusableSliceError for an array that is not 2-D, is smaller than MIN_SIDE on a side,
    holds NaN or infinity, or is blank (its 1st and 99th percentiles are equal).
    """
    image = np.asarray(pixels, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < MIN_SIDE:  # noqa: PLR2004 (2-D)
        raise UnusableSliceError(
            f"the pixel array has shape {image.shape}; the model reads one 2-D slice of at "
            f"least {MIN_SIDE} x {MIN_SIDE} pixels.",
            _ROUTE_HINT,
        )
    if not np.isfinite(image).all():
        raise UnusableSliceError(
            "the pixel values include NaN or infinity.", "Check the sending modality's export."
        )
    if invert:
        image = -image
    return normalise(resize(square(image), size))[None, None]


def square(image: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``image`` centred in a square of its longer side, padded with its darkest value."""
    rows, cols = image.shape
    side = max(rows, cols)
    top, left = (side - rows) // 2, (side - cols) // 2
    out = np.full((side, side), image.min(), dtype=np.float64)
    out[top : top + rows, left : left + cols] = image
    return out


def resize(image: npt.NDArray[np.float64], size: int) -> npt.NDArray[np.float64]:
    """``image`` area-resampled to ``size`` x ``size`` (nearest pixel when enlarging)."""
    out: npt.NDArray[np.float64] = (
        _area_matrix(image.shape[0], size) @ image @ _area_matrix(image.shape[1], size).T
    )
    return out


def normalise(image: npt.NDArray[np.float64]) -> FloatArray:
    """``image`` scaled so its 1st percentile is 0 and its 99th is 1, clipped to CLIP."""
    low, high = (float(v) for v in np.percentile(image, PERCENTILES))
    if not high - low > 1e-6 * max(1.0, abs(high)):
        raise UnusableSliceError(
            "the slice is blank: nearly all its pixels have the same value.",
            "Send the slice with the anatomy in it; blank or padding slices carry nothing to read.",
        )
    scaled: FloatArray = np.clip((image - low) / (high - low), *CLIP).astype(np.float32)
    return scaled


def _area_matrix(source: int, size: int) -> npt.NDArray[np.float64]:
    """Row ``i`` holds the share of each source pixel in output pixel ``i`` (rows sum to 1)."""
    edges = np.arange(size + 1, dtype=np.float64) * (source / size)
    pixel = np.arange(source, dtype=np.float64)
    overlap = np.minimum(edges[1:, None], pixel[None, :] + 1) - np.maximum(
        edges[:-1, None], pixel[None, :]
    )
    weights: npt.NDArray[np.float64] = np.clip(overlap, 0.0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights


def _describe(ds: Dataset) -> str:
    modality = str(ds.get("Modality", "")) or "no modality"
    uid = str(ds.get("SOPInstanceUID", "")) or "no SOP instance UID"
    return f"DICOM object {uid} ({modality})"


def _check_attributes(ds: Dataset, what: str) -> None:
    modality = str(ds.get("Modality", ""))
    if modality not in MODALITIES:
        raise UnusableSliceError(
            f"{what}: modality '{modality or 'missing'}' is not one the imaging model reads "
            f"({', '.join(sorted(MODALITIES))}).",
            _ROUTE_HINT,
        )
    if "PixelData" not in ds:
        raise UnusableSliceError(
            f"{what} has no pixel data (Pixel Data, 7FE0,0010).",
            "Send the image object itself, not a report, a presentation state or a header-only "
            "copy.",
        )
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in GREYSCALE or int(ds.get("SamplesPerPixel", 1)) != 1:
        raise UnusableSliceError(
            f"{what} has photometric interpretation '{photometric or 'missing'}'; the model "
            "reads greyscale (MONOCHROME1 or MONOCHROME2) slices only.",
            "Send the original greyscale series, not a colour rendering or a secondary capture.",
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise UnusableSliceError(
            f"{what} is a multi-frame object with {frames} frames; the model reads one slice "
            "per object.",
            "Configure the modality or PACS to send the series as single-frame (classic) "
            "images.",
        )
    if int(ds.get("BitsAllocated", 16)) == 1:
        raise UnusableSliceError(
            f"{what} has 1-bit pixels (a segmentation or a mask), not an image to read.",
            _ROUTE_HINT,
        )


def _decode(ds: Dataset, what: str) -> npt.NDArray[Any]:
    try:
        return np.asarray(ds.pixel_array)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError, TypeError) as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", None) or str(syntax or "an unknown transfer syntax")
        raise UnusableSliceError(
            f"{what}: its pixel data ({name}) cannot be decoded here: {exc}.",
            "Have the sender transcode to an uncompressed transfer syntax (Explicit VR Little "
            "Endian), or propose it when negotiating the association.",
        ) from exc
