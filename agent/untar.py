"""Unpacking an update package safely, on every Python the project supports.

``tarfile``'s extraction filters (``extractall(..., filter="data")``) arrived in Python 3.11.4 (and 3.12); Debian
12's own ``python3`` is 3.11.2, where passing ``filter`` is a TypeError. So the policy is applied here, the same on
every version, before a byte is written:

* every member must be a regular file or a directory: symbolic links, hard links, devices, FIFOs and anything else
  are refused (an update package has no reason to carry them, and a link is how an archive writes outside its
  folder);
* no absolute name (``/etc/passwd``), no ``..`` component, nothing that would land outside the target.

Then the members are written: with ``filter="data"`` where the Python has it (a second guard), otherwise member by
member here, with the permissions the ``data`` filter gives (group and other write bits and set-id bits dropped,
the owner can always read and write files, a file not executable by its owner is executable by nobody; owners are
never set from the archive). Both paths give the same tree.

:func:`unpack` extracts into ``<dest>.unpack`` and moves it to ``dest`` only when everything was written: on any
failure the ``.unpack`` folder is removed and ``dest`` is untouched.

Standard library only (a test runs this module under Debian's ``/usr/bin/python3`` with nothing else installed).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
from pathlib import Path


class UnsafeArchive(ValueError):
    """The archive holds a member this unpacker refuses; the message names it and says why."""


def has_filter() -> bool:
    """Whether this Python's ``tarfile`` has extraction filters (3.11.4+, 3.12+)."""
    return hasattr(tarfile, "data_filter")


def _refusal(member: tarfile.TarInfo, root: str) -> str | None:
    name = member.name
    if member.issym():
        return f"{name!r} is a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"{name!r} is a hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return f"{name!r} is a device"
    if member.isfifo():
        return f"{name!r} is a FIFO"
    if not (member.isreg() or member.isdir()):
        return f"{name!r} is not a regular file or a directory (type {member.type!r})"
    if not name or "\x00" in name:
        return f"{name!r} is not a usable name"
    if name.startswith(("/", "\\")) or posixpath.isabs(name) or os.path.isabs(name):
        return f"{name!r} is an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return f"{name!r} has a '..' component"
    target = os.path.realpath(os.path.join(root, name))
    if target != root and not target.startswith(root + os.sep):
        return f"{name!r} would be written outside the target"
    return None


def check_members(tar: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:
    """Every member of ``tar``, after refusing the archive (:class:`UnsafeArchive`) for the first one that breaks
    the policy above."""
    root = os.path.realpath(dest)
    members = tar.getmembers()
    for m in members:
        why = _refusal(m, root)
        if why is not None:
            raise UnsafeArchive(f"refused: {why}")
    return members


def _file_mode(mode: int) -> int:
    """The permissions the ``data`` filter gives a regular file."""
    mode &= 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def _extract_members(tar: tarfile.TarFile, members: list[tarfile.TarInfo], root: Path) -> None:
    """Member by member, for a Python without extraction filters; the members were checked."""
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    for m in members:
        target = root / m.name
        if m.isdir():
            target.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or not target.is_dir():  # cannot happen with links refused; never follow one
                raise UnsafeArchive(f"refused: {m.name!r} is not a directory on disk")
            dirs.append((target, m))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        src = tar.extractfile(m)
        if src is None:
            raise UnsafeArchive(f"refused: {m.name!r} has no content")
        if target.is_symlink() or target.exists():
            if target.is_symlink() or not target.is_file():
                raise UnsafeArchive(f"refused: {m.name!r} replaces something that is not a file")
            target.unlink()  # a later member of the same name wins, as in tarfile
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as out, src:
            shutil.copyfileobj(src, out, 1 << 16)
        os.chmod(target, _file_mode(m.mode))
        os.utime(target, (m.mtime, m.mtime))
    for target, m in reversed(dirs):  # deepest first, once their content is written (as tarfile does)
        os.utime(target, (m.mtime, m.mtime))


def extract(archive: Path, root: Path) -> None:
    """Extract the ``.tar.gz`` ``archive`` into the existing, empty folder ``root`` under the policy above.

    Raises :class:`UnsafeArchive` for a refused member (nothing written), ``tarfile.TarError``, ``EOFError`` or
    ``OSError`` for an unreadable archive or a write that failed (part of it may be written)."""
    with tarfile.open(archive, "r:gz") as tar:
        members = check_members(tar, root)
        if has_filter():
            tar.extractall(root, members=members, filter="data")
        else:
            _extract_members(tar, members, root)


def unpack(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest.unpack`` and move that to ``dest`` (replacing it) once complete.

    On any failure the ``.unpack`` folder is removed, ``dest`` is left as it was, and the error is raised again:
    :class:`UnsafeArchive`, ``tarfile.TarError``, ``EOFError``, ``OSError`` (or anything unexpected)."""
    tmp = dest.with_name(dest.name + ".unpack")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        extract(archive, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


__all__ = ["UnsafeArchive", "check_members", "extract", "has_filter", "unpack"]
