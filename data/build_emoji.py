"""One-time build of lib/rankdml/data/files/emoji32.npz: the same emoji drawn by several independent design teams.

Run by the book's authors, never at run time:

    python data/build_emoji.py            # needs npm on PATH, plus numpy, pillow and cairosvg

Steps:
1. `npm pack` pinned versions of the Iconify emoji sets into data/_build_cache/ (git-ignored) and check
   each tarball against its pinned sha512 integrity, so a re-published package cannot change the data.
2. Read each set's licence from its own info.json and refuse share-alike or unknown licences.
3. A class is an icon name (exact name join across sets) drawn by at least MIN_TEAMS teams; skin-tone
   variants, country flags and icons the set marks "hidden" (deprecated names) are dropped.
4. Render each SVG with cairosvg at 32x32, composite on white, and write the arrays into a zip whose
   entries carry a fixed date, so two builds give byte-identical files. The SHA-256 printed at the end
   goes into `EMOJI_SHA256` in lib/rankdml/data/embedded.py.

Arrays in the npz (images ordered by class, then by style in STYLES order):
    images      uint8 (N, 32, 32, 3)   RGB on white
    labels      int64 (N,)             index into class_names
    class_names <U (C,)                sorted icon names
    styles      int64 (N,)             index into style_names
    style_names <U (S,)                Iconify set names
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / "_build_cache"
#: Written into the package, which ships it (rankdml.data.embedded reads it with importlib.resources).
OUTPUT = HERE.parent / "lib" / "rankdml" / "data" / "files" / "emoji32.npz"
SIZE = 32
MIN_TEAMS = 3

# (Iconify set, npm version, npm dist.integrity). One entry per independent design team: noto-v1 and
# the other Fluent variants are the same teams again and would make classes easier, not larger.
# OpenMoji is left out on purpose: CC-BY-SA-4.0 would make the data file share-alike.
STYLES: list[tuple[str, str, str]] = [
    ("noto", "1.2.9",
     "sha512-DQiuXENbun41ch+XPSV55H9FaWKpHTyz46YIKtSaKYD4fIDDzL1tR6H4np/T38jfrTAeI3rcKF0mqHYeZVAuaw=="),
    ("twemoji", "1.2.5",
     "sha512-uKpuIEV0v6K5BW3Mjdyl+XKFVAbbcPxAgifKvEMtZoUZB5+YiY5zaMm2uNNCxyXzAWU9yNLlj41WU6/mvgALsw=="),
    ("fluent-emoji-flat", "1.2.6",
     "sha512-RY47RgPb47fYUiyrA64sIOL0+UU02s29sXpNBbIQRBUlPlfNFTKUmZDERGuxDs/7yNGWqQYvuaSYM1M4fRXlUw=="),
    ("emojione", "1.2.3",
     "sha512-T9+T3HIbJNLKKsmxYKlaYhvnHYkz/HNYTV7SHCXVZPfeUi4FqskY70YeN8yYAZT8cCv7w5vJxS4Q1m8zb9CMMg=="),
    ("fxemoji", "1.2.2",
     "sha512-UAasRaxzFUKfIGSmLwnoarsssA4LX0VLLuEmplIqM6ZNQqIQRtav8tZ4H1neTlBreXuMQyAifr5jP4kn78DpiQ=="),
]
ALLOWED_LICENSES = {"Apache-2.0", "MIT", "CC-BY-4.0"}

# Skin-tone modifiers would make five near-identical classes out of one; country/region flags are
# rectangles of stripes that a 32 px image barely tells apart. "flag-in-hole" (golf) is an object.
SKIN_TONE = re.compile(r"skin-tone|(^|-)tone[1-5]($|-)")
COUNTRY_FLAG = re.compile(r"^flag-(?!in-hole$)")

# Fixed zip entry date (the earliest a zip can store), so the file bytes do not depend on the clock.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def fetch_set(name: str, version: str, integrity: str) -> dict:
    """npm-pack one pinned set into the cache (once), verify it, and return its icons.json + info.json."""
    CACHE.mkdir(exist_ok=True)
    tarball = CACHE / f"iconify-json-{name}-{version}.tgz"
    if not tarball.exists():
        subprocess.run(["npm", "pack", "--silent", f"@iconify-json/{name}@{version}"], cwd=CACHE, check=True,
                       stdout=subprocess.DEVNULL)
    algo, expected = integrity.split("-", 1)
    digest = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
    if digest != expected:
        raise SystemExit(f"{tarball}: {algo} integrity mismatch; delete it and run again")
    with tarfile.open(tarball) as tar:
        icons = json.load(tar.extractfile("package/icons.json"))
        info = json.load(tar.extractfile("package/info.json"))
    license_id = info.get("license", {}).get("spdx")
    if license_id not in ALLOWED_LICENSES:
        raise SystemExit(f"@iconify-json/{name}@{version}: licence {license_id!r} is not one we can ship")
    icons["info"] = info
    return icons


def render(icon_set: dict, name: str) -> np.ndarray:
    """Rasterise one icon to (SIZE, SIZE, 3) uint8, alpha-composited on white."""
    import cairosvg
    from PIL import Image

    icon = icon_set["icons"][name]
    # Per-icon box overrides the set default (a few icons are wider or taller than the rest).
    left, top = icon.get("left", icon_set.get("left", 0)), icon.get("top", icon_set.get("top", 0))
    width, height = icon.get("width", icon_set.get("width", 16)), icon.get("height", icon_set.get("height", 16))
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
           f'viewBox="{left} {top} {width} {height}">{icon["body"]}</svg>')
    png = cairosvg.svg2png(bytestring=svg.encode(), output_width=SIZE, output_height=SIZE)
    rgba = Image.open(io.BytesIO(png)).convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return np.asarray(canvas.convert("RGB"), dtype=np.uint8)


def select_classes(sets: dict[str, dict]) -> list[str]:
    """Sorted icon names drawn by at least MIN_TEAMS sets (exact name join), minus the dropped kinds."""
    teams: dict[str, int] = {}
    for icon_set in sets.values():
        for name, icon in icon_set["icons"].items():
            if not icon.get("hidden"):
                teams[name] = teams.get(name, 0) + 1
    return sorted(n for n, k in teams.items()
                  if k >= MIN_TEAMS and not SKIN_TONE.search(n) and not COUNTRY_FLAG.match(n))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, but with fixed zip dates and entry order so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w") as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(value), allow_pickle=False)
            entry = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_DATE)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            zf.writestr(entry, buf.getvalue(), compresslevel=9)


def main() -> None:
    sets = {name: fetch_set(name, version, integrity) for name, version, integrity in STYLES}
    style_names = [name for name, _, _ in STYLES]
    for name, icon_set in sets.items():
        print(f"{name:18s} {len(icon_set['icons']):5d} icons  {icon_set['info']['license']['spdx']}  "
              f"{icon_set['info']['author']['name']}")
    class_names = select_classes(sets)

    images, labels, styles = [], [], []
    for c, name in enumerate(class_names):
        for s, style in enumerate(style_names):
            icon = sets[style]["icons"].get(name)
            if icon is None or icon.get("hidden"):
                continue
            images.append(render(sets[style], name))
            labels.append(c)
            styles.append(s)
    styles_arr = np.asarray(styles, dtype=np.int64)
    arrays = {
        "images": np.stack(images),
        "labels": np.asarray(labels, dtype=np.int64),
        "class_names": np.asarray(class_names, dtype=str),
        "styles": styles_arr,
        "style_names": np.asarray(style_names, dtype=str),
    }
    write_npz(OUTPUT, arrays)

    per_class = np.bincount(arrays["labels"])
    print(f"{len(class_names)} classes, {len(images)} images, {per_class.min()}..{per_class.max()} per class")
    print("images per style:", dict(zip(style_names, np.bincount(styles_arr, minlength=len(style_names)).tolist())))
    print(f"{OUTPUT.name}: {OUTPUT.stat().st_size / 1e6:.2f} MB")
    print(f"SHA-256 {hashlib.sha256(OUTPUT.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    sys.exit(main())
