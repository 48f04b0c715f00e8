"""DICOM and NIfTI rendering (gsco.data.medical, gsco.data.render): pydicom's and nibabel's own pipelines are the
ground truth; window presets, MONOCHROME1, series order and patient privacy on synthetic files."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gsco.config import ConfigError
from gsco.data.medical import MedicalImageError, read_scan
from gsco.data.render import RenderSettings, apply_window, minmax, plane_slice, render, to_display

from conftest import REPO

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


def pydicom_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name))


def synthetic_dicom(path: Path, pixels: np.ndarray, **tags) -> Path:
    """A single-frame greyscale DICOM file (explicit VR little endian) with ``tags`` set."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, int(pixels.dtype == np.int16)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm"])
def test_dicom_pixels_equal_pydicoms_modality_then_voi_pipeline(name):
    """Our values are pydicom's apply_modality_lut output and, with window=auto, its apply_voi_lut output scaled
    from the VOI's output range onto 0..255 — exactly; a file without a window (CT_small) gets its full range."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(pydicom_file(name))
    modality = apply_modality_lut(ds.pixel_array, ds)
    scan = read_scan(pydicom_file(name))
    assert np.array_equal(scan.values[0], modality)
    picture = np.asarray(render(pydicom_file(name)))
    if "WindowCenter" in ds:
        voi = apply_voi_lut(modality, ds)
        windowed, (low, high) = scan.voi(scan.values[0])
        assert np.array_equal(windowed, voi)
        expected = np.round((np.clip(voi, low, high) - low) / (high - low) * 255).astype(np.uint8)
        c, w = float(ds.WindowCenter), float(ds.WindowWidth)  # DICOM's linear window: black below, white above
        assert (picture[modality <= c - 0.5 - (w - 1) / 2] == 0).all()
        assert (picture[modality > c - 0.5 + (w - 1) / 2] == 255).all() and 0 < picture.mean() < 255
    else:
        expected = np.round((modality - modality.min()) / (modality.max() - modality.min()) * 255).astype(np.uint8)
    assert np.array_equal(picture, expected)
    if ds.Modality == "CT":  # a named window over Hounsfield units
        lung = np.asarray(render(pydicom_file(name), RenderSettings(window="lung")))
        assert np.array_equal(lung, apply_window(modality, -600, 1500))


def test_window_presets_rgb_and_custom_windows_on_synthetic_values():
    hu = np.array([-2000, -1351, -1350, -600, 148, 149, 150, 1000], dtype=np.float64)
    # lung: centre -600, width 1500 -> 0 up to -1350, 255 above 149, linear between
    assert apply_window(hu, -600, 1500).tolist() == [0, 0, 0, 128, 255, 255, 255, 255]
    assert apply_window(np.array([0.0, 40.0, 80.0]), 40, 80).tolist() == [0, 129, 255]  # brain
    from gsco.data.medical import Scan

    scan = Scan(hu.reshape(1, 2, 4))
    rgb = to_display(scan, RenderSettings(window="rgb"))
    assert rgb.shape == (1, 2, 4, 3)
    assert np.array_equal(rgb[..., 0], apply_window(scan.values, -600, 1500))  # lung, mediastinum, bone
    assert np.array_equal(rgb[..., 1], apply_window(scan.values, 50, 350))
    assert np.array_equal(rgb[..., 2], apply_window(scan.values, 400, 1800))
    assert np.array_equal(to_display(scan, RenderSettings(window="40:400")), apply_window(scan.values, 40, 400))
    assert np.array_equal(to_display(scan, RenderSettings(window="minmax")), minmax(scan.values))
    with pytest.raises(ConfigError, match="key 'window': 'lungs'; choose auto"):
        RenderSettings(window="lungs").check()
    with pytest.raises(ConfigError, match="three windows"):
        RenderSettings(window="rgb", rgb_windows=["lung"]).check()


@pytest.mark.e2e
def test_monochrome1_is_inverted_and_a_volume_gives_a_slice_montage_or_three_planes(tmp_path):
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8) * 50
    m2 = np.asarray(render(synthetic_dicom(tmp_path / "m2.dcm", pixels)))
    m1 = np.asarray(render(synthetic_dicom(tmp_path / "m1.dcm", pixels, PhotometricInterpretation="MONOCHROME1")))
    assert m2[0, 0] == 0 and m2[-1, -1] == 255 and np.array_equal(m1, 255 - m2)
    volume = np.random.default_rng(0).normal(size=(12, 10, 8)).astype(np.float32)  # RAS x, y, z; 1 mm voxels
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "v.nii.gz")
    shown = to_display(read_scan(tmp_path / "v.nii.gz"), RenderSettings())
    montage = np.asarray(render(tmp_path / "v.nii.gz", RenderSettings(view="montage", montage_slices=4)))
    picks = [int((i + 0.5) * 8 / 4) for i in range(4)]  # axial: 8 slices, four evenly spaced
    tiles = [shown[k] for k in picks]
    assert np.array_equal(montage, np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]]))
    ortho = np.asarray(render(tmp_path / "v.nii.gz", RenderSettings(view="orthogonal")))
    assert ortho.shape == (2 * 10, 2 * 12)  # cells as large as the largest plane (axial 10 x 12)
    assert np.array_equal(ortho[:10, :12], plane_slice(shown, "axial", None))
    with pytest.raises(ConfigError, match="key 'slice': 8 is outside this volume's 8 axial slices"):
        render(tmp_path / "v.nii.gz", RenderSettings(slice=8))


def _series(folder: Path, order: list[int], normal_step: float = 2.5, uid: str = "1.2.3.4") -> None:
    """Five oblique slices whose pixels hold their index along the normal; files and InstanceNumbers shuffled."""
    row, col = np.array([1.0, 0, 0]), np.array([0, np.cos(0.3), np.sin(0.3)])
    normal = np.cross(row, col)
    folder.mkdir(parents=True, exist_ok=True)
    for file_no, k in enumerate(order):
        position = np.array([-100.0, 20.0, 7.0]) + k * normal_step * normal
        synthetic_dicom(folder / f"IM{file_no:03d}.dcm", np.full((6, 7), 100 * k, dtype=np.uint16),
                        ImageOrientationPatient=[*row, *col], ImagePositionPatient=list(position),
                        InstanceNumber=(7 * file_no) % 5 + 1, SeriesInstanceUID=uid, SeriesNumber=uid[-1],
                        PixelSpacing=[0.5, 0.5], RescaleSlope=1, RescaleIntercept=-1000)


@pytest.mark.e2e
def test_a_series_folder_is_sorted_along_the_slice_normal(tmp_path):
    _series(tmp_path / "s", [3, 0, 4, 1, 2])
    (tmp_path / "s" / "notes.txt").write_text("not DICOM")
    scan = read_scan(tmp_path / "s")
    assert [int(scan.values[k, 0, 0]) for k in range(5)] == [-1000, -900, -800, -700, -600]
    assert scan.spacing == pytest.approx((2.5, 0.5, 0.5))
    _series(tmp_path / "s", [5], uid="1.2.3.9")
    with pytest.raises(MedicalImageError, match="holds 2 series"):
        read_scan(tmp_path / "s")


@pytest.mark.e2e
def test_patient_name_and_id_never_reach_logs_outputs_or_errors(tmp_path, caplog):
    secret = {"PatientName": "Doe^Janeth", "PatientID": "PID-93817", "PatientBirthDate": "19450203"}
    good = synthetic_dicom(tmp_path / "good.dcm", np.arange(16, dtype=np.uint16).reshape(4, 4), **secret)
    proc = subprocess.run([sys.executable, "-m", "gsco.data.render", str(good), str(tmp_path / "out.png")],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "GSCO_TRACEBACK": "0"})
    assert proc.returncode == 0, proc.stderr
    damaged = tmp_path / "damaged.dcm"
    data = good.read_bytes()
    damaged.write_bytes(data[:-10])  # pixel data cut short
    bad = subprocess.run([sys.executable, "-m", "gsco.data.render", str(damaged), str(tmp_path / "bad.png")],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "damaged.dcm" in bad.stderr and bad.stderr.count("\n") == 1
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(MedicalImageError) as err:
            read_scan(damaged)
    texts = [proc.stdout, proc.stderr, bad.stdout, bad.stderr, str(err.value), caplog.text,
             (tmp_path / "out.png").read_bytes().decode("latin-1"), json.dumps(os.listdir(tmp_path))]
    for text in texts:
        for value in ("Doe", "Janeth", "PID-93817", "19450203"):
            assert value not in text
    from gsco.data.medical import identifying_values, scrub

    assert scrub("value 'Doe^Janeth' for PID-93817", identifying_values(pydicom.dcmread(good))) == \
        "value '<redacted>' for <redacted>"


@pytest.mark.e2e
def test_compressed_pixels_without_a_decoder_and_files_without_pixels_are_one_clear_error():
    with pytest.raises(MedicalImageError, match=r"compressed \(JPEG-LS .*\) and no installed decoder reads it: "
                                                r"pip install pylibjpeg"):
        read_scan(pydicom_file("JPEGLSNearLossless_08.dcm"))
    with pytest.raises(MedicalImageError, match="has no pixel data .not an image: SOP class RT Plan Storage"):
        read_scan(pydicom_file("rtplan.dcm"))
    rgb = render(pydicom_file("examples_ybr_color.dcm"))  # multi-frame colour: the middle frame, as RGB
    assert rgb.mode == "RGB" and rgb.size == (320, 240)


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz", "example4d.nii.gz"])
def test_nifti_slices_equal_nibabels_canonical_data_sliced_by_hand(name):
    """values[z, row, col] of the canonical (RAS+) data: axial rows anterior->posterior and columns the patient's
    right->left; coronal and sagittal with superior at the top. A 4D file gives its first volume."""
    canon = nib.as_closest_canonical(nib.load(NIBABEL_DATA / name)).get_fdata()
    canon = canon[..., 0] if canon.ndim == 4 else canon
    X, Y, Z = canon.shape
    scan = read_scan(NIBABEL_DATA / name)
    for k in (0, Z // 2, Z - 1):
        assert np.array_equal(plane_slice(scan.values, "axial", k), canon[::-1, ::-1, k].T)
    for k in (0, Y // 2, Y - 1):
        assert np.array_equal(plane_slice(scan.values, "coronal", k), canon[::-1, Y - 1 - k, ::-1].T)
    for k in (0, X // 2, X - 1):
        assert np.array_equal(plane_slice(scan.values, "sagittal", k), canon[X - 1 - k, ::-1, ::-1].T)
    zooms = nib.load(NIBABEL_DATA / name).header.get_zooms()
    picture = render(NIBABEL_DATA / name, RenderSettings(plane="coronal"))
    if len(set(zooms[:3])) == 1:  # isotropic: the middle coronal slice by hand, scaled over the volume's range
        assert np.array_equal(np.asarray(picture), minmax(canon)[::-1, Y - 1 - Y // 2, ::-1].T)
    else:  # square pixels: a coronal pixel is (z zoom) mm tall and (x zoom) mm wide
        x_mm, z_mm = zooms[0], zooms[2]
        unit = min(x_mm, z_mm)
        assert picture.size == (round(X * x_mm / unit), round(Z * z_mm / unit))


@pytest.mark.e2e
def test_render_command_writes_the_image_the_models_see(tmp_path):
    import shutil

    from gsco.data.readers import open_image

    out = tmp_path / "ct_lung.png"
    proc = subprocess.run([sys.executable, "-m", "gsco.data.render", str(pydicom_file("CT_small.dcm")), str(out),
                           "window=lung"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and f"wrote {out} (128x128, grey)" in proc.stdout
    shutil.copy(pydicom_file("CT_small.dcm"), tmp_path / "IM0001")  # a PACS export's name: no suffix, DICM preamble
    assert np.array_equal(np.asarray(open_image(tmp_path / "IM0001")),
                          np.asarray(open_image(pydicom_file("CT_small.dcm"))))
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(open_image(pydicom_file("CT_small.dcm"),
                                                                             RenderSettings(window="lung"))))
    bad = subprocess.run([sys.executable, "-m", "gsco.data.render", str(tmp_path / "nope.dcm"), str(out)],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "nope.dcm does not exist" in bad.stderr


@pytest.mark.e2e
def test_readme_render_commands(tmp_path):
    """README's three render commands, as written, on pydicom's CT, a synthetic series and a nibabel volume."""
    import shutil

    from doc_commands import run_documented

    shutil.copy(pydicom_file("CT_small.dcm"), tmp_path / "scan.dcm")
    _series(tmp_path / "ct_series", [2, 0, 1, 4, 3])
    shutil.copy(NIBABEL_DATA / "example4d.nii.gz", tmp_path / "head.nii.gz")
    proc = run_documented("python -m gsco.data.render scan.dcm scan.png", cwd=tmp_path)
    assert "wrote scan.png (128x128, grey)" in proc.stdout
    run_documented("python -m gsco.data.render ct_series/ lung.png window=lung", cwd=tmp_path)
    assert Image.open(tmp_path / "lung.png").size == (7, 6)
    run_documented("python -m gsco.data.render head.nii.gz montage.png view=montage window=brain", cwd=tmp_path)
    montage = Image.open(tmp_path / "montage.png")  # 9 axial slices of 128 x 96 (2 mm square pixels), 3 x 3
    assert montage.size == (3 * 128, 3 * 96) and montage.mode == "L"


@pytest.mark.e2e
def test_entry_points_read_dicom_series_and_nifti_with_their_render_keys(tmp_path):
    """demo.py (README's command), MedDr evaluation and a specialist's metafile dataset read DICOM files, series
    folders and NIfTI as the render keys say; a predictions file made with one window is not resumed with another."""
    import shutil

    from gsco.data.datasets import Preprocess, build_dataset
    from gsco.data.readers import open_image, read_image
    from gsco.data.registry import DatasetInfo
    from gsco.evaluation.resumable import ResumeMismatchError
    from gsco.recipes.evaluate import EvalConfig, evaluate

    from doc_commands import run_documented

    shutil.copy(pydicom_file("CT_small.dcm"), tmp_path / "scan.dcm")
    proc = run_documented('python demo.py image=scan.dcm question="What is shown?" window=lung',
                          replace={"scan.dcm": str(tmp_path / "scan.dcm")}, append=["max_new_tokens=3", "device=cpu"])
    assert len(proc.stdout.splitlines()) == 1
    _series(tmp_path / "series", [1, 0, 2, 4, 3])
    shutil.copy(NIBABEL_DATA / "anatomical.nii", tmp_path / "head.nii")
    meta = tmp_path / "vqa.jsonl"
    meta.write_text("".join(json.dumps({"id": i, "image": image, "question_id": str(i), "question": "Normal?",
                                        "answer": "yes"}) + "\n"
                            for i, image in enumerate(["scan.dcm", "series", "head.nii"])))
    base = {"model": "tiny", "metafile": str(meta), "task": "vqa", "device": "cpu", "max_new_tokens": 3,
            "out_dir": str(tmp_path / "eval"), "prompts": str(REPO / "configs/meddr/prompts.yaml")}
    from gsco.config import load_config

    result = evaluate(load_config(EvalConfig, None, {**base, "window": "bone", "view": "orthogonal"}))
    assert result["metrics"]["n"] == 3
    manifest = json.loads((tmp_path / "eval" / "vqa_predictions.manifest.json").read_text())
    assert manifest["render"] == {"window": "bone", "view": "orthogonal"}
    with pytest.raises(ResumeMismatchError, match="render"):
        evaluate(load_config(EvalConfig, None, {**base, "window": "lung"}))
    settings = RenderSettings(window="brain", plane="sagittal")
    info = DatasetInfo(name="toy", task="binary-class", label_names=["a", "b"], format="metafile",
                       metafiles={"test": "test.csv"})
    (tmp_path / "test.csv").write_text("image,label\nhead.nii,a\nseries,b\n")
    ds = build_dataset(info, "test", tmp_path, 32, Preprocess("native", [0.5], [0.5], as_rgb=False), settings)
    assert np.array_equal(ds.image(0), read_image(tmp_path / "head.nii", 32, False, settings))
    assert np.array_equal(ds.image(1), np.asarray(open_image(tmp_path / "series", settings).resize(
        (32, 32), Image.Resampling.BICUBIC)))


def test_the_report_specialist_reads_dicom_views_with_its_render_keys(tmp_path):
    """R2Gen-layout studies whose views are DICOM files: ReportDataset hands the processor exactly what
    gsco.data.render renders with the config's window (a section key in YAML, a plain key on the command line)."""
    import shutil

    import torch

    from gsco.config import load_config
    from gsco.data.readers import open_image
    from gsco.specialists.report.config import ReportConfig
    from gsco.specialists.report.data import ReportDataset

    (tmp_path / "s1").mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), tmp_path / "s1" / "0.dcm")
    (tmp_path / "cfg.yaml").write_text("render:\n  window: bone\n")
    assert load_config(ReportConfig, tmp_path / "cfg.yaml").window == "bone"
    cfg = load_config(ReportConfig, REPO / "configs/report/tiny.yaml", {"window": "lung"})
    seen = []

    def processor(images, return_tensors):
        seen.extend(np.asarray(i) for i in images)
        return {"pixel_values": torch.zeros(len(images), 3, 4, 4)}

    rows = [{"id": "s1", "report": "No acute disease.", "image_path": ["s1/0.dcm"]}]
    assert ReportDataset(rows, tmp_path, processor, "iu_xray", cfg)[0]["pixel_values"].shape == (1, 3, 4, 4)
    lung = np.asarray(open_image(tmp_path / "s1" / "0.dcm", RenderSettings(window="lung")).convert("RGB"))
    assert np.array_equal(seen[0], lung)
    assert not np.array_equal(lung, np.asarray(open_image(tmp_path / "s1" / "0.dcm").convert("RGB")))
    with pytest.raises(ConfigError, match="window"):
        load_config(ReportConfig, None, {"window": "lunge"})


def voi_lut_dicom(path: Path, pixels: np.ndarray, **tags) -> Path:
    """A synthetic DICOM whose VOI is a VOI LUT Sequence (16-bit entries, a ramp that doubles the contrast)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.add_new(0x00283002, "US", [2048, 0, 16])  # LUT Descriptor: entries, first mapped value, bits per entry
    item.add_new(0x00283006, "US", [min(65535, i * 64) for i in range(2048)])  # LUT Data
    return synthetic_dicom(path, pixels, VOILUTSequence=Sequence([item]), **tags)


def test_a_voi_lut_sequence_is_applied_as_pydicom_applies_it_over_its_descriptors_range(tmp_path):
    """Used to render as one flat value (the output range was probed with ±1e12, which overflows a LUT's index)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    pixels = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 2048)
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        path = voi_lut_dicom(tmp_path / f"{photometric}.dcm", pixels, PhotometricInterpretation=photometric)
        ds = pydicom.dcmread(path)
        voi = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
        expected = np.round(voi / 65535 * 255).astype(np.uint8)
        expected = 255 - expected if photometric == "MONOCHROME1" else expected
        picture = np.asarray(render(path))
        assert np.array_equal(picture, expected) and picture.min() == 0 and picture.max() == 255


@pytest.mark.e2e
def test_a_non_numeric_rescale_value_is_one_line_and_its_row_is_skipped_not_the_run(tmp_path):
    from doc_commands import run_documented

    pixels = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 2048)
    bad = synthetic_dicom(tmp_path / "bad.dcm", pixels, RescaleSlope="7.25", RescaleIntercept="0")
    bad.write_bytes(bad.read_bytes().replace(b"7.25", b"abcd"))  # pydicom itself refuses to write such a value
    with pytest.raises(MedicalImageError, match=r"bad.dcm: RescaleSlope is 'abcd', not a number"):
        render(bad)
    good = synthetic_dicom(tmp_path / "good.dcm", pixels, RescaleSlope="1", RescaleIntercept="-1024")
    meta = tmp_path / "meta.jsonl"
    meta.write_text("".join(json.dumps({"question_id": i, "image": str(p), "answer": "a chest"}) + "\n"
                            for i, p in enumerate([good, bad, good])))
    proc = run_documented("MODEL=/path/to/meddr-hf METAFILE=data/iu_xray/test.jsonl IMAGE_ROOT=data/iu_xray/images "
                          "TASK=report OUT_DIR=outputs/meddr BATCH_SIZE=8 bash inference_meddr.sh",
                          replace={"/path/to/meddr-hf": "tiny", "data/iu_xray/test.jsonl": str(meta),
                                   "data/iu_xray/images": str(tmp_path), "outputs/meddr": str(tmp_path / "out")},
                          append=["device=cpu", "max_new_tokens=4", "meteor=false", "report_tokenize=none",
                                  "max_skipped_fraction=0.5"])
    assert "skipping question 1 (line 2): image " in proc.stderr and "RescaleSlope is 'abcd'" in proc.stderr
    rows = (tmp_path / "out" / "meta_predictions.jsonl").read_text().splitlines()
    assert [json.loads(r)["question_id"] for r in rows] == ["0", "2"]


def test_a_4d_series_is_said_and_a_large_nifti_upload_is_refused_before_it_is_read(tmp_path, caplog):
    """A 4D NIfTI shows its first volume and says so (it used to do so silently); the web app refuses an upload
    whose header promises more voxels than it takes (a small .nii.gz can expand to gigabytes) before reading it."""
    from gsco.collab.web import check_upload_size
    from gsco.data.readers import DatasetError

    with caplog.at_level(logging.WARNING):
        render(NIBABEL_DATA / "example4d.nii.gz")
    assert "example4d.nii.gz: a 4D series of 2 volumes: its first volume is shown" in caplog.text
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), tmp_path / "small.nii.gz")
    check_upload_size(tmp_path / "small.nii.gz")
    raw = (tmp_path / "small.nii.gz")
    header = nib.load(raw).header.copy()
    header.set_data_shape((2048, 2048, 64))
    bomb = tmp_path / "bomb.nii"
    bomb.write_bytes(header.binaryblock + b"\0" * 4)  # a header promising 268M voxels, with no data behind it
    with pytest.raises(DatasetError, match=r"bomb.nii holds a volume of 268,435,456 voxels, more than this page takes"):
        check_upload_size(bomb)


def test_keep_my_upload_never_overwrites_an_earlier_kept_file(tmp_path):
    from gsco.collab.web import Uploads

    uploads = Uploads(tmp_path / "kept")
    for k, text in enumerate(["first", "second", "third"]):
        (tmp_path / f"u{k}").mkdir()
        (tmp_path / f"u{k}" / "scan.nii.gz").write_text(text)
    kept = [uploads.keep(str(tmp_path / f"u{k}" / "scan.nii.gz")) for k in range(3)]
    assert [p.name for p in kept] == ["scan.nii.gz", "scan-2.nii.gz", "scan-3.nii.gz"]
    assert [p.read_text() for p in kept] == ["first", "second", "third"]
