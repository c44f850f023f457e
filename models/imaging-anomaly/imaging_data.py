"""Backgrounds from data that installed packages ship, and synthetic lesions placed on them.

No labelled clinical imaging set exists offline, so the task is made honest instead: real CT, MR
and CR slices from package data, with round-to-oval lesions of known contrast added in the model's
input space, and whole scanners (sources) kept out of training to measure generalisation.

Sources (a source is one scanner or one volume's origin; ``held_out`` ones are never trained on):

* Debian ``mricron-data``: the Colin27 T1 template (``ch2``, ``ch2better``) and the INIA19
  macaque T1 template, read from ``/usr/share/mricron/templates`` with nibabel;
* ``nibabel``'s test data: an EPI run (``example4d.nii.gz``) and a small anatomical volume;
* ``pydicom``'s bundled files and the ``pydicom-data`` package (its files are inside the wheel:
  pydicom finds them through an entry point and downloads nothing): CT, MR and CR slices from
  Philips, GE, Toshiba, Siemens, Fuji and the pydicom project's synthetic "Acme" scanner;
* for training only, texture the scanners above lack: ultrasound frames of the same packages
  (Aloka, Philips and SonoSite; colour and palette frames taken as their luminance), two of their
  test patterns, and seeded synthetic slices (overlapping soft ellipses under filtered noise at
  three scales). None of them is a held-out scanner; they teach the net that a lesion is not
  just any blob or edge, which anatomy of the held-out scanners is full of.

Lesion contrast is the amplitude of the added blob on the model's input scale, where 1 is the
slice's 1st-to-99th percentile range (see appliance/imaging/preprocess.py).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.imaging.preprocess import INPUT_SIZE, normalise, resize, square

MRICRON = Path("/usr/share/mricron/templates")
STORE_SIDE = 256  # backgrounds are kept at most this large; crops are resampled to INPUT_SIZE
BANDS = ((0.05, 0.10), (0.10, 0.15), (0.15, 0.25), (0.25, 0.40))
CONTRAST_RANGE = (0.08, BANDS[-1][1])  # training draws; the faintest band is for the report
GOAL_CONTRAST = 0.15
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Source:
    """One scanner or volume origin; ``kind`` is "nifti", "dicom" or "mricron"."""

    name: str
    modality: str
    held_out: bool
    kind: str
    files: tuple[str, ...]
    provenance: str


SOURCES = (
    Source("colin27-t1", "MR", False, "mricron", ("ch2.nii.gz", "ch2better.nii.gz"),
           "Debian mricron-data: Colin27 T1 templates"),
    Source("inia19-macaque-t1", "MR", False, "mricron", ("inia19-t1-brain.nii.gz",),
           "Debian mricron-data: INIA19 macaque T1 template"),
    Source("nibabel-epi", "MR", False, "nifti", ("example4d.nii.gz",),
           "nibabel tests/data: 4-D EPI run, first volume"),
    Source("nibabel-anat", "MR", False, "nifti", ("anatomical.nii",),
           "nibabel tests/data: small anatomical volume"),
    Source("ct-693", "CT", False, "dicom", ("693_UNCR.dcm",), "pydicom-data: 693_UNCR CT"),
    Source("philips-cr", "CR", False, "dicom", ("RG1_UNCR.dcm",),
           "pydicom-data: RG1_UNCR, Philips CR"),
    Source("philips-mr-t5", "MR", False, "dicom", ("MR2_UNCR.dcm",),
           "pydicom-data: MR2_UNCR, Philips T5 MR"),
    Source("emri-mr", "MR", False, "dicom", ("emri_small.dcm",),
           "pydicom-data: emri_small, 10-frame MR"),
    Source("ge-ct", "CT", True, "dicom", ("CT_small.dcm",),
           "pydicom: CT_small, GE RHAPSODE CT"),
    Source("acme-ct", "CT", True, "dicom", ("eCT_Supplemental.dcm",),
           "pydicom-data: eCT_Supplemental, 2-frame enhanced CT"),
    Source("toshiba-mr", "MR", True, "dicom", ("MR_small.dcm",),
           "pydicom: MR_small, Toshiba MRT50H1"),
    Source("siemens-mr", "MR", True, "dicom",
           ("MR-SIEMENS-DICOM-WithOverlays.dcm", "examples_overlay.dcm"),
           "pydicom-data and pydicom: Siemens Avanto MR"),
    Source("fuji-cr", "CR", True, "dicom", ("RG3_UNCR.dcm",),
           "pydicom-data: RG3_UNCR, Fuji CR"),
    Source("aloka-us", "US", False, "colour", ("gdcm-US-ALOKA-16.dcm",),
           "pydicom-data: gdcm-US-ALOKA-16, Aloka ultrasound (luminance)"),
    Source("philips-us", "US", False, "colour", ("OBXXXX1A.dcm", "examples_palette.dcm"),
           "pydicom-data and pydicom: OBXXXX1A, examples_palette, Philips ultrasound (luminance)"),
    Source("sonosite-us", "US", False, "colour",
           ("color3d_jpeg_baseline.dcm", "examples_ybr_color.dcm"),
           "pydicom-data and pydicom: SonoSite ultrasound, 18 frames of two runs (luminance)"),
    Source("test-patterns", "OT", False, "dicom", ("mlut_18.dcm", "image_dfl.dcm"),
           "pydicom-data and pydicom: OFFIS grey-step pattern and a block pattern"),
    Source("synthetic-a", "OT", False, "synthetic", ("a",),
           "imaging_data.py: 60 seeded slices of soft ellipses and filtered noise"),
    Source("synthetic-b", "OT", False, "synthetic", ("b",),
           "imaging_data.py: 60 more, from another seed"),
)  # fmt: skip
COLOUR_FRAMES = {"color3d_jpeg_baseline.dcm": 12, "examples_ybr_color.dcm": 6}  # evenly spaced
SYNTHETIC_COUNT = 60
_LUMA = np.array([0.299, 0.587, 0.114])  # Rec. 601 luminance of RGB


@dataclass(frozen=True)
class Background:
    source: str
    label: str  # file and slice, for the card's failure analysis
    image: F64  # square, at most STORE_SIDE, modality values (MONOCHROME1 already negated)


@dataclass(frozen=True)
class CaseSet:
    """Model inputs with per-case truth: ``images`` [N,1,S,S], ``masks`` [N,1,S,S] (0/1)."""

    images: F32
    masks: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    contrast: F64  # 0 for negatives
    source: npt.NDArray[np.str_]


# --- backgrounds -------------------------------------------------------------------------------


@functools.cache
def backgrounds(held_out: bool) -> tuple[Background, ...]:
    """Every background slice of the sources with ``held_out`` (same order on every run)."""
    out: list[Background] = []
    for source in SOURCES:
        if source.held_out == held_out:
            out.extend(_source_slices(source))
    return tuple(out)


def _source_slices(source: Source) -> Iterator[Background]:
    for name in source.files:
        for label, pixels, invert in _read(source.kind, name):
            image = -pixels if invert else pixels
            image = square(image)
            if image.shape[0] > STORE_SIDE:
                image = resize(image, STORE_SIDE)
            if np.percentile(image, 99) - np.percentile(image, 1) > 0:
                yield Background(source.name, label, image)


def _read(kind: str, name: str) -> Iterator[tuple[str, F64, bool]]:
    if kind == "dicom":
        yield from _read_dicom(name)
    elif kind == "colour":
        yield from _read_colour(name)
    elif kind == "synthetic":
        yield from _synthetic(name)
    else:
        yield from _read_volume(MRICRON / name if kind == "mricron" else _nibabel_data() / name)


def _package_file(name: str) -> tuple[Any, npt.NDArray[Any]]:
    """The dataset of pydicom's (or pydicom-data's) file ``name`` and its frames [F, ...]."""
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        raise FileNotFoundError(f"{name}: install pydicom-data (pip) for the imaging recipe")
    ds = pydicom.dcmread(path)
    pixels = np.asarray(ds.pixel_array)
    if str(ds.PhotometricInterpretation) == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = np.asarray(apply_color_lut(pixels, ds))
    return ds, pixels if int(ds.get("NumberOfFrames", 1) or 1) > 1 else pixels[None]


def _read_dicom(name: str) -> Iterator[tuple[str, F64, bool]]:
    from pydicom.pixels.processing import apply_rescale

    ds, frames = _package_file(name)
    invert = str(ds.PhotometricInterpretation) == "MONOCHROME1"
    for index, frame in enumerate(frames):
        values = np.asarray(apply_rescale(frame, ds), dtype=np.float64)
        yield f"{name}#{index}", values, invert


def _read_colour(name: str) -> Iterator[tuple[str, F64, bool]]:
    """Frames of a colour or palette ultrasound file as luminance (Y of YBR, or Rec. 601 of
    RGB); multi-frame runs give COLOUR_FRAMES[name] evenly spaced frames."""
    ds, frames = _package_file(name)
    photometric = str(ds.PhotometricInterpretation)
    for index in np.linspace(0, len(frames) - 1, COLOUR_FRAMES.get(name, 1)).astype(int):
        frame = frames[index].astype(np.float64)
        luminance = frame[..., 0] if photometric.startswith("YBR") else frame[..., :3] @ _LUMA
        yield f"{name}#{index}", luminance, False


def _synthetic(part: str) -> Iterator[tuple[str, F64, bool]]:
    """SYNTHETIC_COUNT seeded 256 x 256 slices: 3-11 overlapping ellipses (organs, 14-90 px
    half-axes, any sign), blurred, under filtered noise at scales 1, 3 and 8 px."""
    from scipy import ndimage

    rng = np.random.default_rng((77, ord(part)))
    yy, xx = np.mgrid[0:STORE_SIDE, 0:STORE_SIDE].astype(np.float64)
    for index in range(SYNTHETIC_COUNT):
        image = np.zeros((STORE_SIDE, STORE_SIDE))
        for _ in range(int(rng.integers(3, 12))):
            cy, cx = rng.uniform(20, STORE_SIDE - 20, 2)
            ry, rx = rng.uniform(14, 90, 2)
            angle = rng.uniform(0, np.pi)
            u = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / rx
            v = (-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)) / ry
            image += rng.uniform(-1, 1) * (u * u + v * v < 1)
        image = ndimage.gaussian_filter(image, rng.uniform(0.5, 2.5))
        for scale in (1, 3, 8):
            noise = ndimage.gaussian_filter(rng.normal(size=image.shape), scale)
            image += rng.uniform(0, 0.25) * noise * scale
        yield f"synthetic-{part}#{index}", image, False


def _read_volume(path: Path) -> Iterator[tuple[str, F64, bool]]:
    import nibabel

    volume = np.asarray(nibabel.load(path).dataobj, dtype=np.float64)  # type: ignore[attr-defined]
    if volume.ndim == 4:  # noqa: PLR2004
        volume = volume[..., 0]
    # Axial and coronal slices through the middle half: the ends hold too little anatomy.
    for axis, count in ((2, 10), (1, 6)):
        size = volume.shape[axis]
        for index in np.linspace(size * 0.3, size * 0.7, count).astype(int):
            image = np.rot90(np.take(volume, index, axis=axis))
            yield f"{path.name}:{axis}:{index}", np.ascontiguousarray(image), False


def _nibabel_data() -> Path:
    import nibabel

    return Path(nibabel.__file__).parent / "tests" / "data"


# --- cases ---------------------------------------------------------------------------------------


def make_cases(
    pool: tuple[Background, ...],
    count: int,
    rng: np.random.Generator,
    *,
    augment: bool,
    contrasts: F64 | None = None,
) -> CaseSet:
    """``count`` cases on backgrounds drawn from ``pool``: half positive, lesion contrast from
    ``contrasts`` (one per positive, in order) or uniform over CONTRAST_RANGE."""
    images = np.empty((count, 1, INPUT_SIZE, INPUT_SIZE), np.float32)
    masks = np.zeros((count, 1, INPUT_SIZE, INPUT_SIZE), np.uint8)
    labels = (np.arange(count) % 2).astype(np.int64)
    contrast = np.zeros(count)
    sources = []
    positive = 0
    names = sorted({b.source for b in pool})
    by_source = {name: [b for b in pool if b.source == name] for name in names}
    for i in range(count):
        # Source first, then a slice of it: a one-slice CR source counts as much as a volume.
        slices = by_source[names[int(rng.integers(len(names)))]]
        background = slices[int(rng.integers(len(slices)))]
        image = _view(background.image, rng, augment)
        if labels[i]:
            c = (
                float(contrasts[positive])
                if contrasts is not None
                else rng.uniform(*CONTRAST_RANGE)
            )
            positive += 1
            image, masks[i, 0] = _add_lesion(image, c, rng)
            contrast[i] = c
        images[i, 0] = image
        sources.append(background.source)
    return CaseSet(images, masks, labels, contrast, np.array(sources))


def banded_contrasts(per_band: int) -> F64:
    """``per_band`` contrasts evenly spread inside each of BANDS."""
    steps = (np.arange(per_band) + 0.5) / per_band
    return np.concatenate([lo + (hi - lo) * steps for lo, hi in BANDS])


def _view(image: F64, rng: np.random.Generator, augment: bool) -> F32:
    """A random square crop (65-100 % of the side), resampled and normalised like on the box."""
    side = image.shape[0]
    crop = max(16, int(side * rng.uniform(0.65, 1.0)))
    top, left = (int(rng.integers(side - crop + 1)) for _ in range(2))
    view = normalise(resize(image[top : top + crop, left : left + crop], INPUT_SIZE))
    view = np.rot90(view, int(rng.integers(4)))
    if rng.random() < 0.5:  # noqa: PLR2004
        view = view[:, ::-1]
    if augment:
        view = _augment(np.ascontiguousarray(view), rng)
    return np.ascontiguousarray(view, dtype=np.float32)


def _augment(view: F32, rng: np.random.Generator) -> F32:
    """Scanner-like variation: contrast curve, blur, noise."""
    gamma = rng.uniform(0.6, 1.6)
    out = np.where(view > 0, np.abs(view) ** gamma, view)
    if rng.random() < 0.5:  # noqa: PLR2004
        out = (1 - (a := rng.uniform(0.2, 0.8))) * out + a * _box3(out)
    out = out + rng.normal(0.0, rng.uniform(0.0, 0.03), out.shape)
    return out.astype(np.float32)


def _box3(image: npt.NDArray[Any]) -> npt.NDArray[Any]:
    padded = np.pad(image, 1, mode="edge")
    rows, cols = image.shape
    return sum(padded[r : r + rows, c : c + cols] for r in range(3) for c in range(3)) / 9.0


def _add_lesion(
    image: F32, contrast: float, rng: np.random.Generator
) -> tuple[F32, npt.NDArray[np.uint8]]:
    """``image`` with an oval lesion of ``contrast`` (brighter or darker) inside the anatomy."""
    size = image.shape[0]
    bright = rng.random() < 0.6  # noqa: PLR2004
    local = _box3(_box3(image))
    need = 0.15 if bright else 0.15 + contrast
    margin = 10
    inside = local[margin:-margin, margin:-margin] >= need
    candidates = np.argwhere(inside) + margin
    if not len(candidates):
        candidates = np.argwhere(np.ones((size - 2 * margin,) * 2, bool)) + margin
    cy, cx = candidates[int(rng.integers(len(candidates)))]
    radius = rng.uniform(2.5, 8.0)
    aspect, angle, soft = rng.uniform(0.6, 1.4), rng.uniform(0, np.pi), rng.uniform(0.1, 0.3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / (radius * aspect)
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / (radius / aspect)
    edge = np.minimum((np.sqrt(u * u + v * v) - 1.0) / soft, 50.0)  # no overflow far away
    profile = 1.0 / (1.0 + np.exp(edge))
    sign = 1.0 if bright else -1.0
    out = (image + sign * contrast * profile).astype(np.float32)
    return out, (profile >= 0.5).astype(np.uint8)  # noqa: PLR2004
