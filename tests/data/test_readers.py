"""Tests of medcls.data.readers on files written here and on files pydicom ships."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage
from pydicom.pixels import get_decoder, get_encoder
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from medcls.data.readers import (
    Image,
    _core,
    check_array,
    read_image,
    register_reader,
    supported_suffixes,
)
from medcls.errors import ConfigError, DataError

try:  # tests/ as a package or as rootdir-inserted folders
    from tests.data.dicom_utils import axial_positions, make_enhanced_ct, make_slice, write_series
except ImportError:
    from dicom_utils import axial_positions, make_enhanced_ct, make_slice, write_series

RNG = np.random.default_rng(1234)


def bundled(name: str) -> Path:
    """A test file shipped inside pydicom (never downloaded); skip if absent."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom does not ship {name} offline")
    return Path(path)


def bundled_series(*parts: str) -> Path:
    folder = bundled("CT_small.dcm").parent.joinpath("dicomdirtests", *parts)
    if not folder.is_dir():
        pytest.skip(f"pydicom does not ship the folder {'/'.join(parts)}")
    return folder


def stored_pixels(path: Path) -> np.ndarray:
    return pydicom.dcmread(path).pixel_array


def ras_point(sitk_image: sitk.Image, index: tuple[int, ...]) -> np.ndarray:
    """World position of ``index`` according to SimpleITK, turned from LPS into RAS."""
    lps = np.asarray(sitk_image.TransformIndexToPhysicalPoint(index), dtype=np.float64)
    return lps * np.array([-1.0, -1.0, 1.0])


def world(image: Image, index: tuple[int, ...]) -> np.ndarray:
    return (image.affine @ np.array([*index, 1.0]))[:3]


# ------------------------------------------------------------------------ raster files


@pytest.mark.parametrize(
    ("suffix", "dtype"),
    [
        (".png", np.uint8),
        (".png", np.uint16),
        (".bmp", np.uint8),
        (".tif", np.uint8),
        (".tiff", np.uint16),
    ],
)
def test_gray_raster_values_are_kept_exactly(tmp_path, suffix, dtype):
    top = np.iinfo(dtype).max
    data = RNG.integers(0, top, size=(20, 32), endpoint=True).astype(dtype)
    data[0, 0], data[0, 1] = 0, top
    path = tmp_path / f"img{suffix}"
    PILImage.fromarray(data).save(path)
    image = read_image(path)
    assert image.array.dtype == np.float32
    assert image.array.shape == (1, 20, 32)
    np.testing.assert_array_equal(image.array[0], data.astype(np.float32))
    assert image.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(image.affine, np.eye(3))
    assert image.spatial_dims == 2 and image.in_chans == 1
    assert image.meta["original_dtype"] == np.dtype(dtype).name


def test_rgb_png_keeps_three_channels_and_drops_alpha(tmp_path):
    rgb = RNG.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
    PILImage.fromarray(rgb).save(tmp_path / "rgb.png")
    image = read_image(tmp_path / "rgb.png")
    assert image.array.shape == (3, 16, 24)
    np.testing.assert_array_equal(image.array, rgb.transpose(2, 0, 1))

    rgba = np.concatenate([rgb, np.full((16, 24, 1), 7, np.uint8)], axis=2)
    PILImage.fromarray(rgba).save(tmp_path / "rgba.PNG")  # upper-case suffix
    image = read_image(tmp_path / "rgba.PNG")
    np.testing.assert_array_equal(image.array, rgb.transpose(2, 0, 1))
    assert image.meta["alpha_dropped"] is True


def test_palette_png_is_gray_only_when_its_palette_is_gray(tmp_path):
    gray = RNG.integers(0, 256, size=(8, 8), dtype=np.uint8)
    PILImage.fromarray(gray).convert("P").save(tmp_path / "gray_palette.png")
    image = read_image(tmp_path / "gray_palette.png")
    assert image.array.shape == (1, 8, 8)
    np.testing.assert_array_equal(image.array[0], gray)

    colour = PILImage.fromarray(RNG.integers(0, 256, size=(8, 8, 3), dtype=np.uint8))
    colour.convert("P", palette=PILImage.Palette.ADAPTIVE, colors=16).save(tmp_path / "c.png")
    assert read_image(tmp_path / "c.png").array.shape == (3, 8, 8)


def test_jpeg_gray_and_rgb_decode_close_to_the_original(tmp_path):
    yy, xx = np.mgrid[0:32, 0:32]
    smooth = (4 * yy + 3 * xx).astype(np.uint8)
    PILImage.fromarray(smooth).save(tmp_path / "g.jpg", quality=95)
    image = read_image(tmp_path / "g.jpg")
    assert image.array.shape == (1, 32, 32)
    assert np.abs(image.array[0] - smooth).mean() < 2.0

    rgb = np.stack([smooth, smooth[::-1], smooth[:, ::-1]], axis=2)
    PILImage.fromarray(rgb).save(tmp_path / "c.jpeg", quality=95)
    image = read_image(tmp_path / "c.jpeg")
    assert image.array.shape == (3, 32, 32)
    assert np.abs(image.array - rgb.transpose(2, 0, 1)).mean() < 3.0


def test_float_tiff_and_multipage_tiff_volume(tmp_path):
    data = RNG.normal(size=(6, 5)).astype(np.float32)
    PILImage.fromarray(data).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif").array[0], data)

    pages = RNG.integers(0, 65535, size=(3, 6, 5)).astype(np.uint16)
    frames = [PILImage.fromarray(p) for p in pages]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    volume = read_image(tmp_path / "stack.tif", spatial_dims=3)
    assert volume.array.shape == (1, 5, 6, 3)  # (C, column, row, page)
    np.testing.assert_array_equal(volume.array[0], pages.transpose(2, 1, 0))


def test_truncated_png_is_a_data_error_naming_the_file(tmp_path):
    data = RNG.integers(0, 256, size=(32, 32), dtype=np.uint8)
    path = tmp_path / "cut.png"
    PILImage.fromarray(data).save(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated") as err:
        read_image(path)
    assert str(path) in str(err.value) and err.value.path == str(path)


def test_not_an_image_and_empty_file(tmp_path):
    (tmp_path / "text.png").write_text("hello, not a PNG")
    with pytest.raises(DataError, match="corrupt") as err:
        read_image(tmp_path / "text.png")
    assert "text.png" in str(err.value)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_image(tmp_path / "empty.png")


# ------------------------------------------------------------------------------ DICOM


@pytest.mark.parametrize(("slope", "intercept"), [(1.0, -1024.0), (0.5, -1000.0)])
def test_dicom_ct_slice_is_in_hounsfield_units(tmp_path, slope, intercept):
    stored = RNG.integers(0, 4096, size=(12, 10)).astype(np.uint16)
    ds = make_slice(stored, slope=slope, intercept=intercept, pixel_spacing=(0.6, 0.8))
    ds.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    image = read_image(tmp_path / "ct.dcm")
    assert image.array.shape == (1, 12, 10)
    np.testing.assert_array_equal(image.array[0], stored * slope + intercept)
    assert image.spacing == (0.6, 0.8)  # (row spacing, column spacing)
    np.testing.assert_array_equal(image.affine, np.diag([0.6, 0.8, 1.0]))
    meta = image.meta
    assert meta["modality"] == "CT" and meta["format"] == "dicom"
    assert (meta["rescale_slope"], meta["rescale_intercept"]) == (slope, intercept)
    assert (meta["window_center"], meta["window_width"]) == (40.0, 400.0)
    assert meta["original_dtype"] == "uint16" and meta["bits_stored"] == 16
    assert meta["image_position_patient"] == [0.0, 0.0, 0.0]


def test_bundled_ct_small_hu_match_stored_values():
    path = bundled("CT_small.dcm")
    ds = pydicom.dcmread(path)
    image = read_image(path)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(image.array[0], expected)
    assert image.spacing == tuple(float(v) for v in ds.PixelSpacing)


def test_dicom_found_by_preamble_without_suffix_and_dcm_without_preamble(tmp_path):
    stored = RNG.integers(0, 1000, size=(6, 7)).astype(np.int16)
    ds = make_slice(stored, intercept=0.0)
    ds.save_as(tmp_path / "IM0001", enforce_file_format=True)
    np.testing.assert_array_equal(read_image(tmp_path / "IM0001").array[0], stored)

    # an old-style file: no preamble, no file meta, implicit VR; found by its .dcm suffix
    del ds.file_meta
    ds.preamble = None
    ds.save_as(tmp_path / "old.dcm", implicit_vr=True, little_endian=True)
    assert not _core.has_dicm_preamble(tmp_path / "old.dcm")
    np.testing.assert_array_equal(read_image(tmp_path / "old.dcm").array[0], stored)


def test_monochrome1_is_inverted_into_monochrome2(tmp_path):
    stored = RNG.integers(0, 4096, size=(5, 6)).astype(np.uint16)
    ds = make_slice(
        stored,
        photometric="MONOCHROME1",
        bits_stored=12,
        slope=None,
        intercept=None,
        window=(1000.0, 500.0),
        modality="CR",
    )
    ds.save_as(tmp_path / "cr.dcm", enforce_file_format=True)
    image = read_image(tmp_path / "cr.dcm")
    np.testing.assert_array_equal(image.array[0], 4095.0 - stored)
    assert image.meta["monochrome1_inverted"] is True
    assert image.meta["window_center"] == 4095.0 - 1000.0


def test_dicom_without_pixel_data_and_truncated_dicom(tmp_path):
    ds = make_slice(np.zeros((4, 4), np.uint16))
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm", enforce_file_format=True)
    with pytest.raises(DataError, match="no pixel data"):
        read_image(tmp_path / "nopix.dcm")

    make_slice(np.ones((16, 16), np.uint16)).save_as(
        tmp_path / "full.dcm", enforce_file_format=True
    )
    raw = (tmp_path / "full.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(raw[:-100])
    with pytest.raises(DataError, match="truncated") as err:
        read_image(tmp_path / "cut.dcm")
    assert "cut.dcm" in str(err.value)


def test_bundled_truncated_dicom_is_reported():
    path = bundled("MR_truncated.dcm")
    with pytest.raises(DataError, match="corrupt or truncated") as err:
        read_image(path)
    assert err.value.path == str(path)


# ----------------------------------------------------------------------- DICOM series

OBLIQUE = (0.8660254, 0.5, 0.0, -0.5, 0.8660254, 0.0)  # axial plane rotated by 30 degrees


def _hu_series(tmp_path: Path, n: int = 5, **kwargs: object) -> tuple[Path, np.ndarray, list[Path]]:
    stored = RNG.integers(0, 3000, size=(n, 6, 7)).astype(np.int16)
    # file names whose alphabetical order is not the slice order
    names = [f"IM{i}.dcm" for i in np.roll(np.arange(n)[::-1], 2)]
    folder = tmp_path / "series"
    paths = write_series(
        folder,
        stored,
        axial_positions(n, orientation=OBLIQUE),
        names=names,
        orientation=OBLIQUE,
        **kwargs,
    )
    return folder, stored, paths


def test_series_is_ordered_by_position_not_file_name(tmp_path):
    folder, stored, paths = _hu_series(tmp_path)
    assert sorted(p.name for p in paths) != [p.name for p in paths]
    (folder / "notes.txt").write_text("not DICOM")
    image = read_image(folder)
    assert image.array.shape == (1, 7, 6, 5)  # (C, column, row, slice)
    np.testing.assert_array_equal(image.array[0], (stored - 1024.0).transpose(2, 1, 0))
    assert image.meta["files"] == [p.name for p in paths]
    assert image.meta["skipped_files"] == ["notes.txt"]
    assert image.meta["format"] == "dicom-series"
    np.testing.assert_allclose(image.spacing, (0.75, 0.5, 2.5), atol=1e-6)
    assert image.spatial_dims == 3


def test_series_geometry_and_values_agree_with_simpleitk(tmp_path):
    folder, _, _ = _hu_series(tmp_path)
    image = read_image(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    reference = reader.Execute()
    np.testing.assert_array_equal(
        image.array[0], sitk.GetArrayFromImage(reference).transpose(2, 1, 0)
    )
    for index in [(0, 0, 0), (6, 5, 4), (3, 1, 2), (6, 0, 0)]:
        np.testing.assert_allclose(world(image, index), ras_point(reference, index), atol=1e-4)


def test_bundled_real_series_agrees_with_simpleitk():
    folder = bundled_series("98892001", "CT5N")
    image = read_image(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    reference = reader.Execute()
    assert image.array.shape == (1, *reference.GetSize())
    np.testing.assert_allclose(
        image.array[0], sitk.GetArrayFromImage(reference).transpose(2, 1, 0), atol=1e-3
    )
    for index in [(0, 0, 0), (15, 15, 4), (2, 9, 3)]:
        np.testing.assert_allclose(world(image, index), ras_point(reference, index), atol=1e-3)
    positions = image.meta["slice_positions"]
    assert positions == sorted(positions)


def test_series_with_per_slice_rescale(tmp_path):
    stored = RNG.integers(0, 2000, size=(3, 4, 4)).astype(np.uint16)
    folder = tmp_path / "pet"
    folder.mkdir()
    pos = axial_positions(3)
    for k, (slope, intercept) in enumerate([(1.0, 0.0), (2.0, -10.0), (0.25, 5.0)]):
        ds = make_slice(
            stored[k], position=pos[k], slope=slope, intercept=intercept, series_uid="1.2.3.4"
        )
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
    image = read_image(folder)
    expected = np.stack([stored[0], stored[1] * 2.0 - 10.0, stored[2] * 0.25 + 5.0])
    np.testing.assert_array_equal(image.array[0], expected.transpose(2, 1, 0))


def test_series_missing_slice_names_folder_and_positions(tmp_path):
    folder, _, paths = _hu_series(tmp_path, n=6)
    paths[3].unlink()
    with pytest.raises(DataError, match="missing slice") as err:
        read_image(folder)
    message = str(err.value)
    assert str(folder) in message
    assert paths[2].name in message and paths[4].name in message
    assert "5.000 mm" in message and "2.500 mm" in message


def test_series_duplicated_slice(tmp_path):
    folder, _, paths = _hu_series(tmp_path)
    shutil.copy(paths[1], folder / "copy_of_slice.dcm")
    with pytest.raises(DataError, match="duplicated slice position") as err:
        read_image(folder)
    assert "copy_of_slice.dcm" in str(err.value) and paths[1].name in str(err.value)


def test_folder_with_two_series_lists_them(tmp_path):
    folder, _, _ = _hu_series(tmp_path, series_uid="1.2.826.0.1.3680043.8.498.11")
    other = make_slice(np.zeros((6, 7), np.int16), series_uid="1.2.826.0.1.3680043.8.498.22")
    other.save_as(folder / "scout.dcm", enforce_file_format=True)
    with pytest.raises(DataError, match="2 DICOM series") as err:
        read_image(folder)
    assert "1.2.826.0.1.3680043.8.498.11 (5 file(s)" in str(err.value)
    assert "1.2.826.0.1.3680043.8.498.22 (1 file(s)" in str(err.value)


def test_series_with_mixed_orientation_or_size_is_refused(tmp_path):
    folder, _, _ = _hu_series(tmp_path, series_uid="1.2.3.9")
    make_slice(
        np.zeros((6, 7), np.int16),
        position=(0, 0, 100),
        orientation=(0, 1, 0, 0, 0, -1),
        series_uid="1.2.3.9",
    ).save_as(folder / "sagittal.dcm", enforce_file_format=True)
    with pytest.raises(DataError, match="different orientations"):
        read_image(folder)
    make_slice(
        np.zeros((8, 8), np.int16), position=(0, 0, 100), series_uid="1.2.3.9", orientation=OBLIQUE
    ).save_as(folder / "sagittal.dcm", enforce_file_format=True)
    with pytest.raises(DataError, match="differ in size"):
        read_image(folder)


def test_corrupt_file_inside_series_is_named(tmp_path):
    folder, _, paths = _hu_series(tmp_path)
    raw = paths[2].read_bytes()
    paths[2].write_bytes(raw[: len(raw) - 20])
    with pytest.raises(DataError) as err:
        read_image(folder)
    assert err.value.path == str(paths[2])


def test_bundled_real_series_errors():
    with pytest.raises(DataError, match="missing slice"):  # 4 CT slices with a 200 mm gap
        read_image(bundled_series("77654033", "CT2"))
    with pytest.raises(DataError, match="3 DICOM series"):
        read_image(bundled_series("98892003", "MR2"))
    with pytest.raises(DataError, match="different orientations"):
        read_image(bundled_series("98892003", "MR700"))


def test_empty_folder_and_folder_of_non_dicom(tmp_path):
    (tmp_path / "case" / "sub").mkdir(parents=True)
    (tmp_path / "case" / "README").write_text("x")
    with pytest.raises(DataError, match="no DICOM image") as err:
        read_image(tmp_path / "case")
    assert "sub" in str(err.value)


def test_one_slice_series_squeezed_equals_the_file_read_in_2d(tmp_path):
    stored = RNG.integers(0, 3000, size=(1, 6, 7)).astype(np.int16)
    paths = write_series(tmp_path / "one", stored, axial_positions(1))
    volume = read_image(tmp_path / "one")
    assert volume.array.shape == (1, 7, 6, 1)
    squeezed = read_image(tmp_path / "one", spatial_dims=2)
    flat = read_image(paths[0])
    np.testing.assert_array_equal(squeezed.array, flat.array)
    assert squeezed.spacing == flat.spacing
    np.testing.assert_array_equal(squeezed.meta["world_affine"], volume.affine)
    with pytest.raises(DataError, match="expected a 3D volume"):
        read_image(paths[0], spatial_dims=3)


def test_enhanced_multiframe_is_a_volume_sorted_by_frame_position(tmp_path):
    stored = RNG.integers(0, 3000, size=(4, 5, 6)).astype(np.uint16)
    shuffled = [2, 0, 3, 1]
    positions = axial_positions(4, step=1.5)
    ds = make_enhanced_ct(stored[shuffled], positions[shuffled], slope=2.0, intercept=-100.0)
    ds.save_as(tmp_path / "enhanced.dcm", enforce_file_format=True)
    image = read_image(tmp_path / "enhanced.dcm", spatial_dims=3)
    assert image.array.shape == (1, 6, 5, 4)
    assert image.meta["frame_order"] == [1, 3, 0, 2]
    np.testing.assert_array_equal(image.array[0], (stored * 2.0 - 100.0).transpose(2, 1, 0))
    np.testing.assert_allclose(image.spacing, (0.75, 0.5, 1.5))
    np.testing.assert_allclose(world(image, (0, 0, 3)), [10.0, -20.0, 34.5])  # LPS -> RAS


def test_bundled_rtdose_multiframe_agrees_with_simpleitk():
    path = bundled("rtdose.dcm")
    image = read_image(path)
    reference = sitk.ReadImage(str(path))
    assert image.array.shape == (1, 10, 10, 15)
    np.testing.assert_array_equal(
        image.array[0], sitk.GetArrayFromImage(reference).transpose(2, 1, 0)
    )
    np.testing.assert_allclose(
        world(image, (9, 9, 14)), ras_point(reference, (9, 9, 14)), atol=1e-4
    )
    assert image.meta["dose_grid_scaling"] == pytest.approx(1e-6)


# ----------------------------------------------------------------- compressed DICOM


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_dicom_written_here_decodes_losslessly(tmp_path, syntax):
    if not get_encoder(syntax).is_available:
        pytest.skip(f"no installed encoder for {syntax.name}")
    stored = RNG.integers(0, 4096, size=(64, 64)).astype(np.uint16)  # OpenJPEG needs >= 32
    ds = make_slice(stored, bits_stored=12)
    ds.compress(syntax)
    ds.save_as(tmp_path / "c.dcm", enforce_file_format=True)
    assert pydicom.dcmread(tmp_path / "c.dcm").file_meta.TransferSyntaxUID == syntax
    image = read_image(tmp_path / "c.dcm")
    np.testing.assert_array_equal(image.array[0], stored - 1024.0)
    assert image.meta["transfer_syntax_uid"] == syntax


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
)
def test_bundled_lossless_syntaxes_equal_the_uncompressed_file(name):
    reference = read_image(bundled("MR_small.dcm"))
    image = read_image(bundled(name))
    np.testing.assert_array_equal(image.array, reference.array)


@pytest.mark.parametrize(
    ("name", "max_error"),
    [
        ("SC_rgb_jpeg_gdcm.dcm", 0),  # JPEG lossless, RGB
        ("SC_rgb_gdcm_KY.dcm", 0),  # JPEG 2000, RGB
        ("SC_rgb_dcmtk_+eb+cr.dcm", 2),  # JPEG baseline, RGB
        ("SC_rgb_jpeg_dcmtk.dcm", 8),  # JPEG baseline, YBR_FULL -> RGB
        ("SC_rgb_jls_lossy_line.dcm", 3),  # JPEG-LS near-lossless
        ("SC_ybr_full_422_uncompressed.dcm", 8),  # uncompressed YBR_FULL_422 -> RGB
    ],
)
def test_bundled_colour_syntaxes_match_the_rle_reference(name, max_error):
    reference = read_image(bundled("SC_rgb_rle.dcm"))
    image = read_image(bundled(name))
    assert image.array.shape == reference.array.shape == (3, 100, 100)
    assert np.abs(image.array - reference.array).max() <= max_error


def test_bundled_jpeg_baseline_and_jpeg2000_grayscale():
    image = read_image(bundled("JPEG2000.dcm"))  # JPEG 2000 lossy, 16-bit NM
    assert image.array.shape == (1, 1024, 256)
    image = read_image(bundled("JPEGLSNearLossless_08.dcm"))
    assert image.array.shape == (1, 45, 10)


@pytest.mark.parametrize(
    ("name", "syntax", "package"),
    [
        ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS Lossless", "pylibjpeg-libjpeg"),
        ("MR_small_jp2klossless.dcm", "JPEG 2000", "pylibjpeg-openjpeg"),
        ("MR_small_RLE.dcm", "RLE Lossless", "pylibjpeg-rle"),
    ],
)
def test_missing_decoder_plugin_names_syntax_and_package(monkeypatch, name, syntax, package):
    path = bundled(name)
    decoder = get_decoder(
        pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    )
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0",)})
    with pytest.raises(DataError) as err:
        read_image(path)
    message = str(err.value)
    assert syntax in message and f"pip install pylibjpeg {package}" in message
    assert str(path) in message


def test_bundled_32bit_rgb_reports_float32_rounding():
    image = read_image(bundled("SC_rgb_rle_32bit.dcm"))
    assert image.array.shape == (3, 100, 100)
    assert any("exceed 2**24" in issue for issue in image.meta["issues"])


def test_jpegls_decoder_is_really_available():
    assert get_decoder(JPEGLSLossless).is_available


# ------------------------------------------------------------------- NIfTI, NRRD, MHA


def _oblique_affine() -> np.ndarray:
    angle = np.deg2rad(20)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 1.2, 2.5])
    affine[:3, 3] = [-30.0, 12.5, 7.0]
    return affine


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_keeps_array_and_affine(tmp_path, suffix):
    data = RNG.normal(size=(7, 6, 5)).astype(np.float32)
    affine = _oblique_affine()
    nib.save(nib.Nifti1Image(data, affine), tmp_path / f"v{suffix}")
    image = read_image(tmp_path / f"v{suffix}")
    assert image.array.shape == (1, 7, 6, 5)
    np.testing.assert_array_equal(image.array[0], data)
    np.testing.assert_allclose(image.affine, affine, atol=1e-6)
    np.testing.assert_allclose(image.spacing, (0.8, 1.2, 2.5), atol=1e-6)
    assert image.meta["format"] == "nifti"


def test_nifti_scaling_4d_channels_and_units(tmp_path):
    data = RNG.integers(0, 100, size=(4, 3, 2, 2)).astype(np.int16)
    img = nib.Nifti1Image(data, np.diag([0.002, 0.002, 0.003, 1.0]))
    img.header.set_data_dtype(np.int16)
    img.header.set_slope_inter(0.5, -3.0)
    img.header.set_xyzt_units("meter")
    nib.save(img, tmp_path / "m.nii.gz")
    image = read_image(tmp_path / "m.nii.gz")
    assert image.array.shape == (2, 4, 3, 2)
    np.testing.assert_array_equal(image.array, np.moveaxis(data * 0.5 - 3.0, 3, 0))
    np.testing.assert_allclose(image.spacing, (2.0, 2.0, 3.0))
    assert image.meta["original_dtype"] == "int16"


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nhdr", ".mhd"])
def test_itk_formats_give_the_world_coordinates_of_the_same_nifti(tmp_path, suffix):
    data = RNG.normal(size=(7, 6, 5)).astype(np.float32)  # (i, j, k)
    affine = _oblique_affine()
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "ref.nii")
    # the same image as SimpleITK sees it, written in its own (LPS) format
    itk = sitk.ReadImage(str(tmp_path / "ref.nii"))
    sitk.WriteImage(itk, str(tmp_path / f"same{suffix}"))
    nifti = read_image(tmp_path / "ref.nii")
    other = read_image(tmp_path / f"same{suffix}")
    np.testing.assert_array_equal(other.array, nifti.array)
    np.testing.assert_allclose(other.affine, nifti.affine, atol=1e-5)
    np.testing.assert_allclose(other.spacing, nifti.spacing, atol=1e-6)
    for index in [(0, 0, 0), (6, 5, 4), (2, 3, 1)]:
        np.testing.assert_allclose(world(other, index), ras_point(itk, index), atol=1e-4)


def test_itk_built_geometry_and_2d_and_vector_images(tmp_path):
    volume = sitk.GetImageFromArray(RNG.normal(size=(5, 6, 7)).astype(np.float32))  # (z, y, x)
    volume.SetSpacing((0.5, 0.7, 3.0))
    volume.SetOrigin((10.0, -4.0, 2.0))
    volume.SetDirection((0, 0, 1, 1, 0, 0, 0, 1, 0))
    sitk.WriteImage(volume, str(tmp_path / "v.nrrd"))
    image = read_image(tmp_path / "v.nrrd")
    assert image.array.shape == (1, 7, 6, 5)
    for index in [(0, 0, 0), (6, 5, 4), (1, 4, 2)]:
        np.testing.assert_allclose(world(image, index), ras_point(volume, index), atol=1e-5)

    plane = RNG.integers(0, 60000, size=(6, 9)).astype(np.uint16)
    flat = sitk.GetImageFromArray(plane)
    flat.SetSpacing((0.3, 0.4))
    sitk.WriteImage(flat, str(tmp_path / "p.mha"))
    image = read_image(tmp_path / "p.mha")
    assert image.array.shape == (1, 6, 9)  # rows x columns
    np.testing.assert_array_equal(image.array[0], plane)
    assert image.spacing == pytest.approx((0.4, 0.3))

    rgb = sitk.GetImageFromArray(
        RNG.integers(0, 255, size=(4, 5, 3)).astype(np.uint8), isVector=True
    )
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    assert read_image(tmp_path / "rgb.mha").array.shape == (3, 4, 5)


def test_garbage_nifti_gz_and_truncated_nrrd(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(gzip.compress(b"\x00garbage" * 50))
    with pytest.raises(DataError, match="corrupt") as err:
        read_image(tmp_path / "bad.nii.gz")
    assert str(tmp_path / "bad.nii.gz") in str(err.value)
    (tmp_path / "raw.nii.gz").write_bytes(b"not even gzip")
    with pytest.raises(DataError, match="NIfTI"):
        read_image(tmp_path / "raw.nii.gz")

    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), tmp_path / "cut.nii.gz")
    raw = (tmp_path / "cut.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated"):
        read_image(tmp_path / "cut.nii.gz")

    sitk.WriteImage(sitk.Image(8, 8, 8, sitk.sitkFloat32), str(tmp_path / "cut.nrrd"))
    raw = (tmp_path / "cut.nrrd").read_bytes()
    (tmp_path / "cut.nrrd").write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(DataError, match="NRRD"):
        read_image(tmp_path / "cut.nrrd")


def test_nan_and_inf_voxels_are_refused(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 2, 3] = np.nan
    data[0, 0, 1] = np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii")
    with pytest.raises(DataError, match=r"1 NaN and 1 infinite") as err:
        read_image(tmp_path / "nan.nii")
    assert "nan.nii" in str(err.value) and "(0, 0, 0, 1)" in str(err.value)


# ------------------------------------------------------------------------ NumPy files


def test_npy_gets_a_channel_axis(tmp_path):
    plane = RNG.normal(size=(5, 6)).astype(np.float64)
    np.save(tmp_path / "p.npy", plane)
    image = read_image(tmp_path / "p.npy")
    assert image.array.shape == (1, 5, 6) and image.array.dtype == np.float32
    np.testing.assert_allclose(image.array[0], plane, rtol=1e-6)

    volume = RNG.integers(0, 5, size=(3, 5, 6)).astype(np.uint8)
    np.save(tmp_path / "v.npy", volume)
    image = read_image(tmp_path / "v.npy")
    assert image.array.shape == (1, 3, 5, 6)
    np.testing.assert_array_equal(image.affine, np.eye(4))

    np.save(tmp_path / "four.npy", np.zeros((2, 3, 4, 5)))
    with pytest.raises(DataError, match="'image'"):
        read_image(tmp_path / "four.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match=r"obj\.npy"):
        read_image(tmp_path / "obj.npy")


def test_npz_channel_first_with_spacing_or_affine(tmp_path):
    data = RNG.normal(size=(2, 4, 5, 6)).astype(np.float32)
    np.savez(tmp_path / "s.npz", image=data, spacing=np.array([1.0, 2.0, 3.0]))
    image = read_image(tmp_path / "s.npz")
    np.testing.assert_array_equal(image.array, data)
    assert image.spacing == (1.0, 2.0, 3.0)
    np.testing.assert_array_equal(image.affine, np.diag([1.0, 2.0, 3.0, 1.0]))

    affine = _oblique_affine()
    np.savez_compressed(tmp_path / "a.npz", image=data, affine=affine)
    image = read_image(tmp_path / "a.npz")
    np.testing.assert_allclose(image.affine, affine)
    np.testing.assert_allclose(image.spacing, (0.8, 1.2, 2.5))

    np.savez(tmp_path / "k.npz", data)
    with pytest.raises(DataError, match=r"keys \['arr_0'\]"):
        read_image(tmp_path / "k.npz")
    np.savez(tmp_path / "bad.npz", image=data, spacing=np.ones(2))
    with pytest.raises(DataError, match="'spacing'"):
        read_image(tmp_path / "bad.npz")
    np.savez(tmp_path / "2d.npz", image=data[0, 0])
    with pytest.raises(DataError, match="channel-first"):
        read_image(tmp_path / "2d.npz")


def test_empty_array_is_refused(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 5), np.float32))
    with pytest.raises(DataError, match="empty") as err:
        read_image(tmp_path / "e.npy")
    assert "e.npy" in str(err.value)


# ------------------------------------------------------------- dispatch and checking


def test_unknown_suffix_and_missing_path(tmp_path):
    (tmp_path / "x.xyz").write_text("data")
    with pytest.raises(DataError, match=r"unknown image format '\.xyz'") as err:
        read_image(tmp_path / "x.xyz")
    assert ".nii.gz" in str(err.value)
    with pytest.raises(DataError, match="no such file"):
        read_image(tmp_path / "absent.png")
    with pytest.raises(ConfigError, match="spatial_dims"):
        read_image(tmp_path / "x.xyz", spatial_dims=4)


def test_spatial_dims_check_and_squeeze(tmp_path):
    PILImage.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "flat.png")
    with pytest.raises(DataError, match=r"2D image .* expected a 3D volume"):
        read_image(tmp_path / "flat.png", spatial_dims=3)
    data = RNG.normal(size=(7, 6, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.6, 4.0, 1.0])), tmp_path / "one.nii")
    image = read_image(tmp_path / "one.nii", spatial_dims=2)
    assert image.array.shape == (1, 6, 7)  # (rows = j, columns = i)
    np.testing.assert_array_equal(image.array[0], data[:, :, 0].T)
    assert image.spacing == pytest.approx((0.6, 0.5))
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5), np.float32), np.eye(4)), tmp_path / "vol.nii")
    with pytest.raises(DataError, match=r"3D volume .* expected a 2D image"):
        read_image(tmp_path / "vol.nii", spatial_dims=2)
    np.save(tmp_path / "slab.npy", np.arange(12.0).reshape(1, 3, 4))
    np.testing.assert_array_equal(  # a stored-order array is only squeezed, not transposed
        read_image(tmp_path / "slab.npy", spatial_dims=2).array[0], np.arange(12.0).reshape(3, 4)
    )


def test_check_array_errors_and_warnings():
    assert check_array(np.arange(4.0).reshape(1, 2, 2)) == []
    assert check_array(np.full((1, 3, 3), 5.0)) == ["constant image: every value is 5"]
    with pytest.raises(DataError, match="empty"):
        check_array(np.zeros((1, 0, 3)), "a.png")
    with pytest.raises(DataError, match="2 NaN and 0 infinite") as err:
        check_array(np.array([[[np.nan, 1.0, np.nan]]]), "b.nii")
    assert err.value.path == "b.nii"
    with pytest.raises(DataError, match="dtype"):
        check_array(np.array([["a"]]))


def test_constant_image_is_read_with_an_issue(tmp_path):
    PILImage.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "black.png")
    image = read_image(tmp_path / "black.png")
    assert image.meta["issues"] == ["constant image: every value is 0"]


def test_register_reader_adds_a_format_and_validates_it(tmp_path, monkeypatch):
    monkeypatch.setattr(_core, "_READERS", dict(_core._READERS))

    def read_raw(path: Path) -> Image:
        values = np.frombuffer(path.read_bytes(), dtype=np.uint8).reshape(1, 2, -1)
        return Image(values, (1.0, 1.0), np.eye(3), str(path), {"format": "raw"})

    register_reader("RAW8", read_raw)
    assert ".raw8" in supported_suffixes()
    (tmp_path / "a.Raw8").write_bytes(bytes(range(1, 7)))
    image = read_image(tmp_path / "a.Raw8")
    assert image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array[0], [[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ConfigError, match="already have a reader"):
        register_reader(".png", read_raw)

    register_reader(".bad", lambda p: Image(np.zeros((4, 4)), (1.0,), np.eye(2), str(p)))
    (tmp_path / "x.bad").write_bytes(b"1")
    with pytest.raises(DataError, match="expected channel-first"):
        read_image(tmp_path / "x.bad")
