"""The glyphs of the stand-in: 200 characters that stay distinct under the augmentation, and how one is drawn.

Each class is one character (Latin, digits, Greek, Cyrillic, Armenian, Georgian, symbols); each
image draws it in a random font of the ones that ship with matplotlib (DejaVu Sans / Serif /
Sans Mono and STIX General in four weights each, Computer Modern for ASCII letters and digits),
with a random stroke weight, rotation (at most 10 degrees), aspect, scale, position, colours and
noise -- an Omniglot-like task. Classes 1-100 train and 101-200 test, as in CUB's zero-shot
split, and :func:`write_glyph_tree` writes the tree in the official CUB-200-2011 layout, so the
real reader (:class:`heatup_lib.data.CUB200`), cache and pipeline run it unchanged.

Why these 200 characters: :func:`glyph_similarity` measures how alike two characters look to
the training augmentation -- the largest cosine similarity between their blurred, size- and
position-normalised renders over every pair of fonts, mirror images (the pipeline flips
horizontally) and rotations. Pairs that are one visual class under two labels score high:
homoglyphs across scripts (Latin A / Greek Alpha / Cyrillic A: 1.0), case pairs that differ only
in size (o/O, s/S, v/V, ...: >= 0.96; p/P 0.93), mirror pairs (b/d, p/q: 1.0) and l/I/1 (>= 0.96).
Distinct letters such as K/k or h/H score 0.82-0.83; the measure is cautious, so some distinct
but close pairs lose one member too (E/F 0.93, B/8 0.96). The classes were chosen greedily from a
larger pool in a fixed order of scripts, keeping a character only if it scores below
:data:`SELECTION_THRESHOLD` (0.915) against every character kept before
(``bench/standin_study.py select`` reproduces the list); every two classes stay below
:data:`AMBIGUITY_THRESHOLD` (0.92), which leaves room for another FreeType's rasterisation.
Glyphs stay inside the central 3/4 of the image, so any random crop of at least 7/8 of the side
keeps the whole character.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..checks import check_bool, check_float, check_int

__all__ = [
    "GLYPHS",
    "AMBIGUITY_THRESHOLD",
    "SELECTION_THRESHOLD",
    "MAX_ROTATION",
    "SAFE_CROP",
    "FONT_FILES",
    "GlyphClass",
    "font_dir",
    "glyph_fonts",
    "glyph_classes",
    "render_glyph",
    "glyph_similarity",
]


# The 200 classes, in class-id order (id = position + 1): ids 1-100 are the training split.
# Selected by `bench/standin_study.py select` (greedy below SELECTION_THRESHOLD), then shuffled
# with numpy.random.default_rng(0) so that both splits mix the scripts.
GLYPHS: str = (
    "თI⊕դЮ∬Թ≤ფ⇑խի⊢∏∟Ի*$φ×©∠⇔AჯΞ☼¶√ßԵռ♅^≠Ц¥HÆՆ"
    "ცՖM⋆QqՉ∴∛Պr£ქ⊆UԿ♢∈Է☀რ6∝ΦՒΨ←=Œτაჰջ⊥ĳaկVკ+"
    "±♡TεΩ♫K®Ы♥Ոeձ~պ♂αB∅C♃≡N♪დζyς≈SՔ↺2?@⇐Δփνტ"
    "ωXLoԾ9ყ§ЖΣ∄↖ZWო¢E♀ՇՅՋD∵ь¿ლ♄€<Դ∉4☿Y∞&ЩβՎЪ"
    "#7ξֆλ⌂չ⇕ЧPkДδЙRԽ⊂♧☺შfე↩ՁՀJ♆Զღ%øՃæЛ♠b⊗♤mմ"
)

SELECTION_THRESHOLD = 0.915  # the classes were kept below this glyph_similarity ...
AMBIGUITY_THRESHOLD = 0.92  # ... and every two stay below this one (margin for other rasterisers)
MAX_ROTATION = 10.0  # degrees, either way
SAFE_CROP = 0.875  # glyphs lie inside the central 1 - 2 * (1 - SAFE_CROP) = 3/4 of the image

# Font files under matplotlib's fonts/ttf folder. The Computer Modern (BaKoMa) fonts use TeX's own
# encoding outside ASCII letters and digits (cmti10 draws "$" as a pound sign, cmmi10 has old-style
# digits), so they are used for ASCII letters and digits only; cmex10/cmsy10/cmmi10 are left out.
FONT_FILES: tuple[str, ...] = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf",
)
_ASCII_ONLY_PREFIX = "cm"
_ASCII_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_MAX_STROKE = 2  # extra stroke width in pixels at _RENDER_PX
_RENDER_PX = 64  # font size the masks are drawn at (images of side > 64 use twice their side)
_SCALE_RANGE = (0.45, 0.75)  # longer side of the glyph's box / image side
_ASPECT_RANGE = (0.85, 1.15)  # horizontal stretch
_MIN_CONTRAST = 80.0  # |luminance(glyph) - luminance(background)| in 0..255
_NOISE_MAX = 10.0  # standard deviation of the pixel noise, 0..255 units
_GRADIENT_MAX = 40.0  # colour change across the background


@dataclass(frozen=True)
class GlyphClass:
    """One class of the stand-in: CUB class id, character, ASCII name, the fonts that draw it."""

    class_id: int
    char: str
    name: str
    fonts: tuple[str, ...]

    @property
    def folder(self) -> str:
        """The class folder under ``images/``, CUB style: ``"001.LATIN_CAPITAL_LETTER_A"``."""
        return f"{self.class_id:03d}.{self.name}"

    @property
    def split(self) -> str:
        """``"train"`` for class ids 1-100, ``"test"`` for 101-200 (CUB's zero-shot split)."""
        return "train" if self.class_id <= 100 else "test"


def font_dir() -> Path:
    """The folder of the TrueType fonts that ship with matplotlib."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=None)
def _cmap(font_file: str) -> frozenset[int]:
    """Code points the font's character map covers."""
    from fontTools.ttLib import TTFont

    with TTFont(str(font_dir() / font_file), lazy=True) as font:
        return frozenset(font.getBestCmap())


def glyph_fonts(char: str) -> tuple[str, ...]:
    """The files of :data:`FONT_FILES` that have a glyph for ``char`` (by their character map)."""
    if not isinstance(char, str) or len(char) != 1:
        raise ValueError(f"char must be a single character, got {char!r}")
    return tuple(
        f for f in FONT_FILES
        if (char in _ASCII_ALNUM if f.startswith(_ASCII_ONLY_PREFIX) else ord(char) in _cmap(f))
    )


def _char_name(char: str) -> str:
    """An ASCII, file-name-safe name of ``char`` from the Unicode database."""
    name = unicodedata.name(char, f"U+{ord(char):04X}")
    return "".join(c if c.isalnum() else "_" for c in name)


def glyph_classes(num_classes: int = 200) -> list[GlyphClass]:
    """The stand-in's classes: the first ``num_classes // 2`` training and test classes of GLYPHS.

    ``num_classes`` must be even and at most 200; the training classes keep ids 1..C/2 and the
    test classes ids 101..100+C/2, so a smaller tree is a subset of the full one.
    """
    num_classes = check_int("num_classes", num_classes, 2, len(GLYPHS))
    if num_classes % 2:
        raise ValueError(f"num_classes must be even (half train, half test), got {num_classes}")
    half = num_classes // 2
    ids = list(range(1, half + 1)) + list(range(101, 101 + half))
    return [GlyphClass(i, GLYPHS[i - 1], _char_name(GLYPHS[i - 1]), glyph_fonts(GLYPHS[i - 1]))
            for i in ids]


@functools.lru_cache(maxsize=64)
def _font(font_file: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_dir() / font_file), px)


def _mask(char: str, font_file: str, px: int, stroke: int = 0) -> Image.Image:
    """The character's ink as a grey-level image ("L", 255 = ink), cropped to its bounding box."""
    font = _font(font_file, px)
    pad = px // 2 + stroke
    canvas = Image.new("L", (3 * px + 2 * pad, 3 * px + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((canvas.width // 2, canvas.height // 2), char, font=font, fill=255,
                                anchor="mm", stroke_width=stroke, stroke_fill=255)
    box = canvas.getbbox()
    if box is None:
        raise ValueError(f"font {font_file} draws nothing for {char!r} (U+{ord(char):04X})")
    return canvas.crop(box)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def _elastic(mask: Image.Image, rng: np.random.Generator, amount: float) -> Image.Image:
    """``mask`` warped by a smooth random displacement field of RMS ``amount`` x its longer side."""
    from scipy.ndimage import map_coordinates

    pad = int(np.ceil(3 * amount * max(mask.size))) + 1
    a = np.pad(np.asarray(mask, dtype=np.float32), pad)
    h, w = a.shape
    # displacements at 4 x 4 control points
    coarse = rng.normal(0.0, amount * max(mask.size), (2, 4, 4)).astype(np.float32)
    field = [np.asarray(Image.fromarray(c, mode="F").resize((w, h), Image.BICUBIC)) for c in coarse]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warped = map_coordinates(a, [yy + field[0], xx + field[1]], order=1, mode="constant")
    out = Image.fromarray(np.clip(warped, 0, 255).astype(np.uint8), mode="L")
    box = out.getbbox()
    return out.crop(box) if box else mask


def _clutter(size: int, rng: np.random.Generator, count: int, width: float) -> np.ndarray:
    """``count`` random strokes (quadratic curves) as coverage in [0, 1]: float (size, size)."""
    ss = 2  # drawn at 2x and averaged down: anti-aliased
    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)
    t = np.linspace(0.0, 1.0, 16)[:, None]
    for _ in range(count):
        p0, p1, p2 = rng.uniform(-0.1, 1.1, (3, 2)) * size * ss
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2  # (16, 2)
        draw.line([tuple(map(float, q)) for q in curve], fill=255, width=max(1, round(width * ss)))
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0


def render_glyph(char: str, size: int, rng: np.random.Generator,
                 fonts: Sequence[str] | None = None, *, distortion: float = 0.0,
                 clutter: int = 0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One random image of ``char``: uint8 (size, size, 3) and the glyph's box ``(x, y, w, h)``.

    The font is drawn from ``fonts`` (default :func:`glyph_fonts`), then the stroke weight, a
    rotation within :data:`MAX_ROTATION`, an elastic warp (``distortion``: RMS displacement as a
    fraction of the glyph's size, 0 for none), a horizontal stretch, the scale (longer side 45-75 %
    of the image) and a position inside the central 3/4; a background with a linear colour
    gradient, ``clutter`` random strokes in random colours behind the glyph, a glyph colour of
    contrasting luminance, and Gaussian pixel noise. All randomness comes from ``rng``.
    """
    size = check_int("size", size, 16)
    distortion = check_float("distortion", distortion, 0.0, 0.2)
    clutter = check_int("clutter", clutter, 0)
    fonts = tuple(glyph_fonts(char) if fonts is None else fonts)
    if not fonts:
        raise ValueError(f"no font draws {char!r} (U+{ord(char):04X}); "
                         f"fonts tried: {list(FONT_FILES)}")
    font = fonts[int(rng.integers(len(fonts)))]
    stroke = int(rng.integers(0, _MAX_STROKE + 1))
    px = max(_RENDER_PX, 2 * size)
    mask = _mask(char, font, px, stroke * px // _RENDER_PX)
    mask = mask.rotate(float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)), Image.BICUBIC, expand=True)
    mask = mask.crop(mask.getbbox())
    stretch = float(np.exp(rng.uniform(*np.log(_ASPECT_RANGE))))
    longer = float(rng.uniform(*_SCALE_RANGE)) * size
    if distortion:  # warped at twice the final resolution: enough detail, little cost
        s2 = 2 * longer / max(mask.size)
        mask = mask.resize((max(1, round(mask.width * s2)), max(1, round(mask.height * s2))),
                           Image.BOX)
        mask = _elastic(mask, rng, distortion)
    w, h = mask.width * stretch, float(mask.height)
    scale = longer / max(w, h)
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    alpha = np.asarray(mask.resize((tw, th), Image.LANCZOS), dtype=np.float64)[..., None] / 255.0
    margin = round(size * (1 - SAFE_CROP))
    x0 = int(rng.integers(margin, max(margin, size - margin - tw) + 1))
    y0 = int(rng.integers(margin, max(margin, size - margin - th) + 1))

    base = rng.uniform(0, 255, 3)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-12
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    ramp = (xx * direction[0] + yy * direction[1])[..., None]  # (S, S, 1) in [-0.71, 0.71]
    background = base + ramp * rng.uniform(-_GRADIENT_MAX, _GRADIENT_MAX, 3)
    lum = float(_luminance(base))
    for _ in range(100):  # a glyph colour whose luminance differs enough from the background's
        colour = rng.uniform(0, 255, 3)
        if abs(float(_luminance(colour)) - lum) >= _MIN_CONTRAST:
            break
    else:
        colour = np.full(3, 0.0 if lum > 127.5 else 255.0)
    image = background
    if clutter:
        # strokes about as wide as the glyph's own, in colours unrelated to it
        stroke_px = max(1.0, 0.08 * longer)
        for _ in range(clutter):
            cover = _clutter(size, rng, 1, stroke_px)[..., None]
            image = image * (1 - cover) + rng.uniform(0, 255, 3) * cover
    region = image[y0:y0 + th, x0:x0 + tw]
    image[y0:y0 + th, x0:x0 + tw] = region * (1 - alpha) + colour * alpha
    image = image + rng.normal(0.0, float(rng.uniform(0, _NOISE_MAX)), image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), (x0, y0, tw, th)


def _normalised(mask: Image.Image, grid: int, angle: float, flip: bool) -> np.ndarray:
    """``mask`` mirrored/rotated, scaled (aspect kept) so its longer side fills 7/8 of a grid."""
    if flip:
        mask = mask.transpose(Image.FLIP_LEFT_RIGHT)
    if angle:
        mask = mask.rotate(angle, Image.BILINEAR, expand=True)
        mask = mask.crop(mask.getbbox())
    fill = grid * 7 / 8
    s = fill / max(mask.size)
    g = mask.resize((max(1, round(mask.width * s)), max(1, round(mask.height * s))), Image.BOX)
    out = Image.new("L", (grid, grid), 0)
    out.paste(g, ((grid - g.width) // 2, (grid - g.height) // 2))
    return np.asarray(out, dtype=np.float32) / 255.0


def glyph_similarity(chars: Sequence[str], *, blur: float = 1.0, max_angle: float = MAX_ROTATION,
                     flip: bool = True, grid: int = 32, px: int = 48) -> np.ndarray:
    """How alike characters look to the augmentation: (C, C) float64, 1 on the diagonal.

    Entry (i, j) is the largest cosine similarity between a render of ``chars[i]`` (upright) and
    one of ``chars[j]`` (upright, rotated by +-``max_angle``, and mirrored if ``flip``), each in
    any of its :func:`glyph_fonts`, after cutting the glyph to its ink box, scaling its longer
    side to 7/8 of a ``grid`` x ``grid`` image (so size and position do not count), a Gaussian
    blur of ``blur`` pixels and centring; then symmetrised. Homoglyphs score about 1.
    """
    from scipy.ndimage import gaussian_filter

    if isinstance(chars, str):
        chars = list(chars)
    blur = check_float("blur", blur, 0.0)
    max_angle = check_float("max_angle", max_angle, 0.0, 90.0)
    check_bool("flip", flip)
    grid, px = check_int("grid", grid, 8), check_int("px", px, 8)
    angles = (0.0, -max_angle, max_angle) if max_angle else (0.0,)

    def vector(a: np.ndarray) -> np.ndarray:
        v = (gaussian_filter(a, blur) if blur else a).ravel().astype(np.float64)
        v -= v.mean()
        return v / max(np.linalg.norm(v), 1e-12)

    queries, keys, q_owner, k_owner = [], [], [], []
    for i, c in enumerate(chars):
        fonts = glyph_fonts(c)
        if not fonts:
            raise ValueError(f"no font draws {c!r} (U+{ord(c):04X})")
        for f in fonts:
            m = _mask(c, f, px)
            queries.append(vector(_normalised(m, grid, 0.0, False)))
            q_owner.append(i)
            for fl in ((False, True) if flip else (False,)):
                for a in angles:
                    keys.append(vector(_normalised(m, grid, a, fl)))
                    k_owner.append(i)
    q, k = np.stack(queries), np.stack(keys)
    q_owner_a, k_owner_a = np.asarray(q_owner), np.asarray(k_owner)
    sims = q @ k.T  # (renders, variants)
    starts = np.r_[0, np.flatnonzero(np.diff(k_owner_a)) + 1]  # variants are grouped by character
    n = len(chars)
    out = np.empty((n, n))
    for i in range(n):
        out[i] = np.maximum.reduceat(sims[q_owner_a == i].max(axis=0), starts)
    out = np.maximum(out, out.T)
    np.fill_diagonal(out, 1.0)
    return out
