"""Atomic file writes and safe checkpoint reads.

Why: a run killed at any moment must leave the previous file intact (write to a temporary file in the
same folder, fsync, then ``os.replace``), and nothing read from disk may execute code (``weights_only``).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import CheckpointError, OutputError, UsageError

# OSErrors that mean "this output cannot be written here" (not a bug): one line, no traceback
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                  errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}


def output_error(path: str | os.PathLike, exc: OSError) -> OutputError:
    """A one-line ``OutputError`` for an ``OSError`` met while writing ``path``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = "free some space or choose another --out" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) \
        else "choose another --out"
    return OutputError(f"{path}: cannot write ({reason}); {hint}")


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` in one rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        if exc.errno in _OUTPUT_ERRNOS or isinstance(exc, (FileExistsError, NotADirectoryError)):
            raise output_error(path, exc) from exc
        raise
    try:
        writer(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _OUTPUT_ERRNOS:
            raise output_error(path, exc) from exc
        if isinstance(exc, RuntimeError) and _is_write_failure(exc):  # torch.save's C++ writer
            raise output_error(path, OSError(errno.EIO, str(exc).splitlines()[0])) from exc
        raise
    return path


def _is_write_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "file write failed" in text or "failed writing" in text or "no space left" in text


def ensure_output_dir(path: str | os.PathLike, flag: str = "--out", create: bool = True) -> Path:
    """Check, before any work, that ``path`` can be an output folder: not a file, and writable.

    With ``create`` the folder is made (with its parents); otherwise the nearest existing ancestor must be a
    writable folder. Writability is probed by creating and removing a temporary file (``os.access`` says
    yes to root on a read-only mount). Raises ``UsageError`` naming the path.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: is a file, not a folder; choose a folder for the outputs")
    probe_dir = path
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{flag} {path}: cannot create the output folder ({exc.strerror or exc})") from exc
    else:
        while not probe_dir.exists():
            probe_dir = probe_dir.parent
        if not probe_dir.is_dir():
            raise UsageError(f"{flag} {path}: {probe_dir} is a file, not a folder")
    _probe_writable(probe_dir, flag, path)
    return path


def ensure_output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Check that the file ``path`` can be written: not an existing folder, its folder writable."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name (e.g. {path / 'model.onnx'})")
    ensure_output_dir(path.parent if str(path.parent) else Path("."), flag=flag, create=False)
    return path


def _probe_writable(folder: Path, flag: str, path: Path) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".distilseg-probe-", dir=folder)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write in {folder} ({exc.strerror or exc})") from exc
    os.close(fd)
    os.unlink(probe)


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, flag: str = "--out") -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``FOLDER/.lock`` for the duration of a run.

    A second run on the same folder is refused at once (``UsageError``). The kernel drops the lock when the
    holder exits, however it dies, so a stale ``.lock`` file of a dead process never blocks anything.
    """
    import fcntl

    folder = Path(folder)
    lock_path = folder / ".lock"
    try:
        fh = open(lock_path, "a+")
    except OSError as exc:
        raise UsageError(f"{flag} {folder}: cannot create {lock_path} ({exc.strerror or exc})") from exc
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = _read_pid(fh)
            raise UsageError(
                f"{flag} {folder}: another run is using this folder{f' (process {holder})' if holder else ''}; "
                f"wait for it to finish or choose another {flag}"
            ) from exc
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield lock_path
    finally:
        fh.close()  # releases the lock


def _read_pid(fh: Any) -> str:
    try:
        fh.seek(0)
        return fh.read().strip()
    except OSError:
        return ""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, _write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def plain_data(obj: Any) -> Any:
    """Settings and metrics as plain JSON / YAML data: dict keys as strings, tuples as lists, paths as strings,
    numpy and torch scalars / arrays as numbers / lists, any other object as its ``str`` (a run's record is
    written after hours of training: it must not fail on one odd value)."""
    if isinstance(obj, dict):
        return {str(k): plain_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_data(v) for v in obj]
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    tolist = getattr(obj, "tolist", None)  # numpy arrays / scalars, torch tensors
    if callable(tolist) and type(obj).__module__.split(".")[0] in ("numpy", "torch"):
        return plain_data(tolist())
    for base in (bool, int, float, str):  # subclasses (np.float64, np.str_, IntEnum): YAML's safe dumper refuses them
        if isinstance(obj, base):
            return base(obj.value) if isinstance(obj, Enum) else base(obj)
    return str(obj)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_json_object(path: str | os.PathLike, what: str = "settings") -> dict[str, Any]:
    """A JSON file holding one object (a config.json, an ONNX sidecar); anything else is a one-line
    ``CheckpointError`` naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object of {what}, got {type(data).__name__}")
    return data


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``; a pickle that wants to run code is refused, not run."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused to load: not a plain tensor checkpoint or it is damaged "
            f"(only weights are read, never code; {first})"
        ) from exc
