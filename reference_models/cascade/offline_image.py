#!/usr/bin/env python3
"""Build the cascade's docker image without a registry, from this machine's Python.

``docker build`` needs a base image from a registry. On an offline evaluation machine (or in CI)
this script instead writes a root filesystem tarball for ``docker import``: the running
interpreter and its standard library, the installed distributions the model needs (torch,
numpy, scipy, nibabel and everything they require), the shared libraries those binaries load
(found with ``ldd``), a static busybox as ``/bin/sh``, and the model folder in ``/workspace``.
Files keep their absolute paths, so the interpreter finds its prefix and packages exactly as it
does here, and the image behaves like this machine's environment.

Usage::

    python offline_image.py --tar cascade-rootfs.tar --import cascade:offline
    flare-eval run --backend docker --image cascade:offline --inputs DIR --out DIR --team cascade

The image is as large as the installed torch (about 1 GB for a CPU build) and runs on the CPU
unless the interpreter's torch is a CUDA build. Needs Linux, ``ldd`` and ``busybox`` (Debian:
``busybox-static``).
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import io
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

from packaging.requirements import Requirement

__all__ = ["MODEL_DISTRIBUTIONS", "image_changes", "distribution_closure", "rootfs_files", "write_rootfs"]

#: What ``cascade_model`` and ``predict.py`` import.
MODEL_DISTRIBUTIONS = ("torch", "numpy", "scipy", "nibabel")
HERE = Path(__file__).resolve().parent
MODEL_FILES = ("predict.sh", "predict.py", "cascade_model", "weights")
BUSYBOX_APPLETS = ("sh", "dirname", "ls", "cat", "env", "mkdir", "rm")
# Parts of the standard library no inference needs: tests, GUI toolkits, pip bootstrap.
STDLIB_SKIP = {"site-packages", "dist-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip",
               "__pycache__", "lib2to3", "pydoc_data"}
LDD_PATH = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def image_changes() -> list[str]:
    """Dockerfile instructions for ``docker import --change``: working dir, PATH, command."""
    bindir = Path(sys.executable).parent
    return [
        "WORKDIR /workspace",
        f"ENV PATH={bindir}:/bin",
        "ENV HOME=/tmp",
        "ENV PYTHONDONTWRITEBYTECODE=1",
        'CMD ["sh", "predict.sh"]',
    ]


def distribution_closure(names: tuple[str, ...] = MODEL_DISTRIBUTIONS) -> list[metadata.Distribution]:
    """The installed distributions ``names`` and, recursively, all they require (no extras).

    Raises
    ------
    RuntimeError
        When a required distribution is not installed or lists no files (no ``RECORD``).
    """
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise RuntimeError(f"distribution {name!r} is required by the model but not installed") from None
        if dist.files is None:
            raise RuntimeError(f"distribution {name!r} lists no files (no RECORD): cannot copy it")
        seen[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(seen.values())


def _with_link_chain(path: Path) -> list[Path]:
    """``path`` and every hop of its symlink chain, so links and their targets both land."""
    chain = [path]
    while chain[-1].is_symlink() and len(chain) < 40:
        target = Path(os.readlink(chain[-1]))
        chain.append(target if target.is_absolute() else chain[-1].parent / target)
    return [Path(os.path.normpath(p)) for p in chain]


def _is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


def _shared_libraries(binaries: list[Path]) -> set[Path]:
    """Libraries the ELF files load, by ``ldd`` (which also finds the dynamic loader)."""
    libraries: set[Path] = set()
    for binary in binaries:
        result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
        for line in result.stdout.splitlines():
            match = LDD_PATH.search(line)
            if match:
                libraries.update(_with_link_chain(Path(match.group(1))))
    return libraries


def rootfs_files() -> list[Path]:
    """Every host file of the image (interpreter, stdlib, distributions, libraries), sorted."""
    files: set[Path] = set()
    for executable in {Path(sys.executable), Path(sys.executable).parent / "python3"}:
        if executable.exists():
            files.update(_with_link_chain(executable))
    pyvenv = Path(sys.prefix) / "pyvenv.cfg"
    if pyvenv.is_file():
        files.add(pyvenv)
        files.update(_with_link_chain(Path(sys._base_executable)))  # type: ignore[attr-defined]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for root, dirs, names in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in STDLIB_SKIP]
        files.update(Path(root) / n for n in names if not n.endswith(".pyc"))
    for dist in distribution_closure():
        for entry in dist.files or []:
            path = Path(dist.locate_file(entry))
            if path.suffix != ".pyc" and (path.is_file() or path.is_symlink()):
                files.add(Path(os.path.normpath(path)))
    elves = [p for p in files if not p.is_symlink() and _is_elf(p)]
    files.update(_shared_libraries(elves))
    # glibc loads libgcc_s with dlopen when a thread is cancelled; ldd cannot see that
    for lib in _shared_libraries([Path(sys.executable).resolve()]):
        gcc = lib.parent / "libgcc_s.so.1"
        if gcc.exists():
            files.update(_with_link_chain(gcc))
    return sorted(files)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def write_rootfs(tar_path: Path, *, model_dir: Path = HERE) -> int:
    """Write the image's root filesystem as an uncompressed tarball for ``docker import``.

    Parameters
    ----------
    tar_path
        The tarball to write.
    model_dir
        The cascade folder (``predict.sh``, ``predict.py``, ``cascade_model``, ``weights``),
        copied to ``/workspace``.

    Returns
    -------
    int
        Size of the tarball in bytes.

    Raises
    ------
    RuntimeError
        When ``busybox`` or ``ldd`` is missing, or a model distribution is not installed.
    """
    busybox = shutil.which("busybox")
    if busybox is None or shutil.which("ldd") is None:
        raise RuntimeError("offline_image needs busybox (Debian: busybox-static) and ldd (libc-bin)")
    if not _is_elf(Path(busybox)) or _shared_libraries([Path(busybox)]):
        raise RuntimeError(f"{busybox} is not a static busybox (Debian: apt-get install busybox-static)")
    with tarfile.open(tar_path, "w") as tar:
        for path in rootfs_files():
            tar.add(path, arcname=str(path).lstrip("/"), recursive=False)
        tar.add(busybox, arcname="bin/busybox")
        for applet in BUSYBOX_APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(tmp)
        for name in MODEL_FILES:
            tar.add(model_dir / name, arcname=f"workspace/{name}",
                    filter=lambda info: None if "__pycache__" in info.name else info)
        _add_bytes(tar, "etc/passwd", b"root:x:0:0:root:/tmp:/bin/sh\n")
    return tar_path.stat().st_size


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; ``--help`` lists the options."""
    parser = argparse.ArgumentParser(prog="python offline_image.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tar", type=Path, required=True, help="root filesystem tarball to write")
    parser.add_argument("--import", dest="tag", default=None, metavar="TAG",
                        help="then `docker import` it as TAG (e.g. cascade:offline)")
    args = parser.parse_args(argv)
    size = write_rootfs(args.tar)
    print(f"{args.tar}: {size / 1e6:.0f} MB")
    if args.tag:
        changes = [arg for change in image_changes() for arg in ("--change", change)]
        subprocess.run(["docker", "import", *changes, str(args.tar), args.tag], check=True)
        print(f"imported as {args.tag}; run it with: flare-eval run --backend docker --image {args.tag} ...")


if __name__ == "__main__":
    main()
