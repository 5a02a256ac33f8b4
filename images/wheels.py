"""Wheels: the lock's wheels, downloaded once on the host so that the base layer installs them
with no index, and the project's own wheel, built offline from the checkout and installed into a
staging folder that becomes the app layer."""

from __future__ import annotations

import compileall
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile

from images.layer import SOURCE_DATE_EPOCH
from images.process import BuildError, run_step


def download_locked(lock: Path, wheelhouse: Path, python: str, glibc: int, log_file: Path) -> None:
    """The wheels `lock` pins, with their hashes checked, for CPython `python` ("3.11") on x86-64
    Linux with glibc 2.`glibc`; `lock` is copied beside them."""
    # pip takes the platforms a wheel may name literally: every manylinux tag glibc 2.`glibc` runs
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(glibc, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    run_step(
        [sys.executable, "-m", "pip", "download", "--no-cache-dir", "--no-deps",
         "--only-binary=:all:", "--implementation=cp", f"--python-version={python}",
         *(f"--platform={platform}" for platform in platforms),
         "--require-hashes", "-r", str(lock), "--dest", str(wheelhouse)],
        log_file,
    )  # fmt: skip
    shutil.copy(lock, wheelhouse / lock.name)


def build_project_wheel(repo: Path, dest: Path, log_file: Path) -> Path:
    """The project's wheel from `repo`'s files as git sees them (tracked and new, not ignored),
    built offline and reproducibly: the same files give the same wheel."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as error:
        raise BuildError(
            f"the project's wheel is built from the files git lists in {repo} ({error}): build "
            "from a git clone of the repository, with git installed"
        ) from error
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp)
        for name in filter(None, listed.decode().split("\0")):
            if (repo / name).is_file():  # a tracked file deleted in the work tree is left out
                (source / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(repo / name, source / name)
        run_step(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--no-cache-dir", "--wheel-dir", str(dest), str(source)],
            log_file,
            env={**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)},
        )  # fmt: skip
    [wheel] = dest.glob("*.whl")
    return wheel


def install_wheel(wheel: Path, staging: Path, venv: str, python: str) -> None:
    """Install `wheel` with no dependencies into the venv at `venv` of an image whose root is
    `staging`, as `pip install --no-deps` in that venv would."""
    site = f"{venv}/lib/python{python}/site-packages"
    scheme = {"purelib": site, "platlib": site, "scripts": f"{venv}/bin", "data": venv,
              "headers": f"{venv}/include"}  # fmt: skip
    destination = SchemeDictionaryDestination(
        scheme, interpreter=f"{venv}/bin/python", script_kind="posix", destdir=str(staging)
    )
    with WheelFile.open(wheel) as source:
        install(source, destination, {"INSTALLER": b"images"})
    # Hash-checked .pyc files stay valid under the layer's fixed mtimes; the paths they embed
    # are the image's, for tracebacks.
    compileall.compile_dir(
        staging / site.lstrip("/"), ddir=site, quiet=1,
        invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
    )  # fmt: skip
