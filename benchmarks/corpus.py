"""The development corpus for the quality benchmark: real camera photographs from Debian's wallpaper packages.

Run:  .venv/bin/python benchmarks/corpus.py [--cache DIR]     # prints one photo path per line

The photos are kept apart from the test fixtures (the tests use scikit-image's photos only) and are never
committed: each package is fetched with ``apt-get download`` (no root needed, no install) and unpacked
with ``dpkg-deb -x`` into ``${LOUPE_TOOLS_CACHE:-~/.cache/loupe-tools}/dev-corpus/<package>_<version>/``,
once. Only the files listed in PHOTOS are used: every package also ships illustrations, renders and
abstract art, which were looked at one by one and left out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# package -> camera photographs inside it (paths relative to the unpacked package). Left out on purpose:
# every illustration or render (all of gnome-backgrounds and ukui-wallpapers, mate's abstract/ and desktop/,
# most of plasma's), lomiri's analogpattern (a bokeh pattern), umang and Infinite-Sea (edited art), and
# plasma's Kite (a drawn kite on a sky).
_PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
_LOMIRI = "usr/share/backgrounds/{}.jpg"
PHOTOS: dict[str, tuple[str, ...]] = {
    "mate-backgrounds": tuple(
        f"usr/share/backgrounds/mate/nature/{name}.jpg"
        for name in (
            "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
            "Storm", "TwoWings", "Wood", "YellowFlower",
        )
    ),
    "lomiri-wallpapers-16.04": tuple(
        _LOMIRI.format(name)
        for name in (
            "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
            "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
            "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
            "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
            "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi",
        )
    ),
    "lomiri-wallpapers-20.04": (_LOMIRI.format("Kleiber_by_Lukas_Baubkus"),),
    "plasma-workspace-wallpapers": tuple(
        _PLASMA.format(name)
        for name in (
            "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
            "OneStandsOut", "Path", "summer_1am",
        )
    ),
}  # fmt: skip


def default_cache() -> Path:
    root = os.environ.get("LOUPE_TOOLS_CACHE") or str(Path.home() / ".cache" / "loupe-tools")
    return Path(root) / "dev-corpus"


def _run(*command: str, cwd: Path | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout


def _unpacked(package: str, cache: Path) -> Path:
    """The folder the package is unpacked in, fetching it the first time."""
    found = sorted(p for p in cache.glob(f"{package}_*") if p.is_dir() and (p / ".complete").exists())
    if found:
        return found[-1]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        _run("apt-get", "download", package, cwd=Path(tmp))
        debs = sorted(Path(tmp).glob("*.deb"))
        if not debs:
            raise RuntimeError(f"apt-get download {package} left no .deb")
        version = _run("dpkg-deb", "-f", str(debs[0]), "Version").strip().replace(":", "%3a")
        target = cache / f"{package}_{version}"
        staging = Path(tmp) / "x"
        _run("dpkg-deb", "-x", str(debs[0]), str(staging))
        (staging / ".complete").touch()
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def photos(cache: Path | None = None) -> list[Path]:
    """Paths of every development photo, fetching what is missing."""
    cache = cache or default_cache()
    out: list[Path] = []
    for package, files in PHOTOS.items():
        root = _unpacked(package, cache)
        for name in files:
            path = root / name
            if not path.is_file():
                raise FileNotFoundError(f"{package} has no {name} (another version?)")
            out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="default: ~/.cache/loupe-tools/dev-corpus")
    args = parser.parse_args(argv)
    for path in photos(args.cache):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
