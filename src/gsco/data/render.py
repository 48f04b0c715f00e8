"""Write the 8-bit image the models see for a DICOM file or series folder, a NIfTI volume or an ordinary image.

    python -m gsco.data.render INPUT OUTPUT.png [window=lung] [plane=coronal] [slice=40] [view=montage] ...

The one rendering path every reader uses (:func:`gsco.data.readers.open_image`): a way to look before a run.
Values are windowed to 8 bits — ``window=auto``: the DICOM file's own VOI LUT or window when it has one (pydicom's
``apply_voi_lut`` after its modality LUT), otherwise the volume's full range; a named preset in Hounsfield units
(``lung``, ``mediastinum``, ``bone``, ``brain``, ...); ``C:W`` (e.g. ``40:400``); ``minmax``; or ``rgb``: three
presets (``rgb_windows``) as the red, green and blue channels. MONOCHROME1 is inverted. A volume (a series folder,
a multi-frame file, NIfTI) gives one slice of ``plane`` (``slice``: its index, default the middle), a ``montage``
of evenly spaced slices, or the three ``orthogonal`` planes through the middle; pixels are made square from the
voxel spacing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from gsco.config import ConfigError
from gsco.data.medical import Scan, is_medical, read_scan
from gsco.runtime import output_folder

logger = logging.getLogger(__name__)

# (centre, width) in Hounsfield units — the usual CT display windows (Radiopaedia, "Windowing (CT)")
WINDOWS = {
    "brain": (40, 80), "subdural": (75, 215), "stroke": (32, 8), "temporal_bone": (600, 2800),
    "soft_tissue": (50, 400), "mediastinum": (50, 350), "abdomen": (50, 400), "liver": (30, 150),
    "lung": (-600, 1500), "bone": (400, 1800), "spine": (50, 250),
}
PLANES = ("axial", "coronal", "sagittal")
RENDER_KEYS = ("window", "rgb_windows", "plane", "slice", "view", "montage_slices")  # a config's render: section


@dataclasses.dataclass
class RenderSettings:
    """How a DICOM / NIfTI input becomes the 8-bit image a model sees (keys of every command that reads images)."""

    window: str = "auto"  # auto (the file's VOI, else the full range), minmax, a preset (lung, bone, ...), C:W, rgb
    rgb_windows: list[str] = dataclasses.field(default_factory=lambda: ["lung", "mediastinum", "bone"])  # window=rgb
    plane: Literal["axial", "coronal", "sagittal"] = "axial"  # the slice plane of a volume
    slice: int | None = None  # the slice index in that plane (null: the middle one)
    view: Literal["slice", "montage", "orthogonal"] = "slice"  # a volume as one slice, a montage or three planes
    montage_slices: int = 9  # view=montage: evenly spaced slices, in a near-square grid

    def validate(self) -> None:
        self.check()

    def check(self) -> None:
        names = [self.window] if self.window != "rgb" else list(self.rgb_windows)
        if self.window == "rgb" and len(self.rgb_windows) != 3:
            raise ConfigError(f"key 'rgb_windows': three windows (red, green, blue), got {self.rgb_windows}")
        for name in names:
            window_of(name)
        if self.montage_slices < 1:
            raise ConfigError(f"key 'montage_slices': at least 1, got {self.montage_slices}")


def render_identity(cfg: RenderSettings) -> dict:
    """The render settings for a predictions manifest, only where they differ from the defaults (so manifests of
    runs before these keys existed still match)."""
    default = RenderSettings()
    changed = {k: getattr(cfg, k) for k in RENDER_KEYS if getattr(cfg, k) != getattr(default, k)}
    return {"render": changed} if changed else {}


def window_of(name: str) -> tuple[float, float] | None:
    """(centre, width) of a preset or ``C:W``; None for auto / minmax."""
    if name in ("auto", "minmax"):
        return None
    if name in WINDOWS:
        return WINDOWS[name]
    centre, sep, width = name.partition(":")
    try:
        if sep and float(width) > 0:
            return float(centre), float(width)
    except ValueError:
        pass
    raise ConfigError(f"key 'window': {name!r}; choose auto, minmax, rgb, C:W (e.g. 40:400) or one of "
                      f"{', '.join(WINDOWS)}")


def apply_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM's linear window (PS3.3 C.11.2.1.2.1) onto 0..255: at most c - 0.5 - (w-1)/2 is 0, above
    c - 0.5 + (w-1)/2 is 255, linear between; rounded to uint8."""
    if width <= 1:
        return np.where(values > centre - 0.5, 255, 0).astype(np.uint8)
    scaled = ((values - (centre - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.clip(scaled, 0, 255).round().astype(np.uint8)


def minmax(values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """``values`` from [low, high] (default their own range) onto 0..255."""
    finite = np.isfinite(values)
    if low is None or high is None:
        low, high = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 0.0)
    scaled = (np.clip(np.where(finite, values, low), low, high) - low) / (high - low if high > low else 1.0) * 255.0
    return scaled.round().astype(np.uint8)


def to_display(scan: Scan, settings: RenderSettings) -> np.ndarray:
    """The whole scan as uint8 — (z, rows, cols) grey or (z, rows, cols, 3) RGB — windowed as ``settings`` say."""
    if scan.colour:
        return scan.values
    values = scan.values
    if settings.window == "rgb":
        out = np.stack([apply_window(values, *WINDOWS[n]) if n in WINDOWS else apply_window(values, *window_of(n))
                        for n in settings.rgb_windows], axis=-1)
    elif settings.window == "auto" and scan.voi is not None:
        windowed, (low, high) = scan.voi(values)
        out = minmax(np.asarray(windowed, dtype=np.float64), low, high)
    elif settings.window in ("auto", "minmax"):
        out = minmax(values)
    else:
        out = apply_window(values, *window_of(settings.window))
    return 255 - out if scan.invert else out


def plane_slice(volume: np.ndarray, plane: str, index: int | None) -> np.ndarray:
    """One slice of a ``[z, row, col]`` volume: axial ``volume[k]``; coronal ``volume[::-1, k]`` (superior at the
    top); sagittal ``volume[::-1, :, k]`` (superior at the top, anterior on the left). ``index`` None: the middle."""
    axis = PLANES.index(plane)
    n = volume.shape[axis]
    k = n // 2 if index is None else index
    if not 0 <= k < n:
        raise ConfigError(f"key 'slice': {k} is outside this volume's {n} {plane} slices (0..{n - 1})")
    if plane == "axial":
        return volume[k]
    return volume[::-1, k] if plane == "coronal" else volume[::-1, :, k]


def square_pixels(image: np.ndarray, plane: str, spacing: tuple[float, float, float]) -> Image.Image:
    """The slice as a PIL image resized so that one pixel is as tall as it is wide in millimetres."""
    z, rows, cols = spacing
    height_mm, width_mm = {"axial": (rows, cols), "coronal": (z, cols), "sagittal": (z, rows)}[plane]
    picture = Image.fromarray(np.ascontiguousarray(image))
    if math.isclose(height_mm, width_mm, rel_tol=1e-3):
        return picture
    unit = min(height_mm, width_mm)
    size = (max(1, round(picture.width * width_mm / unit)), max(1, round(picture.height * height_mm / unit)))
    return picture.resize(size, Image.Resampling.BILINEAR)


def grid(tiles: list[Image.Image], columns: int) -> Image.Image:
    """Tiles pasted row by row, each cell as large as the largest tile, centred, on black."""
    width, height = max(t.width for t in tiles), max(t.height for t in tiles)
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new(tiles[0].mode, (columns * width, rows * height))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet.paste(tile, (c * width + (width - tile.width) // 2, r * height + (height - tile.height) // 2))
    return sheet


def render_scan(scan: Scan, settings: RenderSettings) -> Image.Image:
    """The picture of a scan: a 2D image as it is; a volume as ``settings.view`` says."""
    display = to_display(scan, settings)
    if scan.depth == 1 and settings.view == "slice":
        return square_pixels(display[0], "axial", scan.spacing)
    if settings.view == "slice":
        return square_pixels(plane_slice(display, settings.plane, settings.slice), settings.plane, scan.spacing)
    if settings.view == "orthogonal":
        tiles = [square_pixels(plane_slice(display, p, None), p, scan.spacing) for p in PLANES]
        return grid(tiles, 2)
    n = display.shape[PLANES.index(settings.plane)]
    count = min(settings.montage_slices, n)
    picks = [int((i + 0.5) * n / count) for i in range(count)]
    tiles = [square_pixels(plane_slice(display, settings.plane, k), settings.plane, scan.spacing) for k in picks]
    return grid(tiles, math.ceil(math.sqrt(count)))


def render(path: str | Path, settings: RenderSettings | None = None) -> Image.Image:
    """The image a model sees for ``path``: DICOM file or series folder, NIfTI, or an ordinary image file."""
    path = Path(path)
    settings = settings or RenderSettings()
    if not is_medical(path):
        return open_plain_image(path)
    scan = read_scan(path)
    for note in scan.notes:
        logger.warning("%s: %s", path, note)
    return render_scan(scan, settings)


HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # Pillow's 16-bit, 32-bit integer and float modes


def open_plain_image(path: Path) -> Image.Image:
    """An ordinary image file (what Pillow reads) fully decoded; 16-bit, 32-bit and float images as 8-bit grey by
    their real range (:func:`minmax`: Pillow's own convert("L") would clip them to 255). A failure is one
    DatasetError naming the file."""
    from gsco.data.registry import DatasetError

    try:
        img = Image.open(path)
        img.load()
        if img.mode in HIGH_DEPTH_MODES:
            return Image.fromarray(minmax(np.asarray(img, dtype=np.float64)))
        return img
    except Exception as exc:  # noqa: BLE001 - any decoder failure becomes one clear error
        raise DatasetError(f"image {path} cannot be read ({type(exc).__name__}: {exc})") from None


OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclasses.dataclass
class RenderConfig(RenderSettings):
    input: str = ""  # a DICOM file or series folder, a NIfTI volume (.nii / .nii.gz), or an ordinary image
    output: str = "render.png"  # the PNG to write (8-bit grey or RGB, as the models see it)


def _render_command(cfg: RenderConfig) -> None:
    if not cfg.input:
        raise ConfigError("give the input: python -m gsco.data.render INPUT OUTPUT.png [key=value ...]")
    cfg.check()
    source, out = Path(cfg.input), Path(cfg.output)
    if not source.exists():
        raise ConfigError(f"input {source} does not exist")
    if out.is_dir() or out.suffix.lower() not in OUTPUT_SUFFIXES:  # checked before the (slow) rendering
        raise ConfigError(f"output {out}: expected an image file name ending {', '.join(OUTPUT_SUFFIXES)}"
                          + (" (it is a folder)" if out.is_dir() else ""))
    picture = render(source, cfg)  # a MedicalImageError is one line naming the file
    output_folder(out.parent, "output")
    partial = out.with_name(f".{out.name}.partial{out.suffix}")  # a kill never leaves half a picture under out
    picture.save(partial)
    partial.replace(out)
    print(f"wrote {out} ({picture.width}x{picture.height}, {'RGB' if picture.mode == 'RGB' else 'grey'})")


def main(argv: list[str] | None = None) -> int:
    """``INPUT OUTPUT`` may come first, as plain words; everything else is key=value."""
    from gsco.cli import command

    args = list(sys.argv[1:] if argv is None else argv)
    words = [i for i, a in enumerate(args) if "=" not in a and not a.startswith("-")
             and not (i and args[i - 1] == "--config")]
    for key, i in zip(("input", "output"), words):
        args[i] = f"{key}={args[i]}"
    return command(RenderConfig, _render_command, description=__doc__.split("\n\n")[0])(args)


if __name__ == "__main__":
    sys.exit(main())
