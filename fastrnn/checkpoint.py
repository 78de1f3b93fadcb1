"""Training checkpoints: a model, its Adam state, the epoch, the RNG state and the run's settings in
one file, written atomically, so an interrupted run can continue exactly where it stopped.

    ckpt = latest_checkpoint("ckpt")                  # None when there is none yet
    if ckpt is not None:
        c = load_checkpoint(ckpt, config={"hidden": 31, "lr": 1e-3})
        model, rng, first_epoch = c.model, c.rng(), c.epoch + 1
    ...
    save_checkpoint("ckpt", model, epoch, rng=rng, config={"hidden": 31, "lr": 1e-3}, keep=3)

File format: the ``.npz`` that :meth:`fastrnn.RNNClassifier.save` writes (parameters, Adam moments
and step, sizes, seed, hyper-parameters; :meth:`~fastrnn.RNNClassifier.load` reads a checkpoint as
a model directly) plus entries prefixed ``ckpt_``: format version, epoch, the NumPy
``Generator``'s bit-generator state and the configuration (both JSON strings, so nothing is
pickled), and any caller ``state`` arrays as ``ckpt_state_<name>``.

Atomicity: the file is written under a temporary name in the same folder, flushed to disk, then
renamed onto ``epoch-NNNN.npz`` (a rename within one file system is atomic), and the folder entry
is flushed; a crash leaves the previous checkpoints and at worst a stray ``.*.tmp`` file, never a
half-written checkpoint under a checkpoint name. Reading checks the zip's CRC-32 of every entry, so
a truncated or corrupted file raises :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastrnn.classifier import RNNClassifier

__all__ = ["Checkpoint", "CheckpointError", "checkpoint_path", "latest_checkpoint",
           "list_checkpoints", "load_checkpoint", "save_checkpoint"]

FORMAT_VERSION = 1
_NAME = re.compile(r"^epoch-(\d+)\.npz$")
_PREFIX = "ckpt_"
_STATE = "ckpt_state_"


class CheckpointError(ValueError):
    """A checkpoint cannot be used: damaged, not a checkpoint, or from another configuration.
    The message starts with the file's path and is one line."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read.

    Attributes
    ----------
    path : Path
        The file.
    model : RNNClassifier
        Parameters, Adam moments and step as they were after ``epoch``.
    epoch : int
        Number of completed epochs when it was written.
    config : dict
        The ``config`` passed to :func:`save_checkpoint` (JSON types).
    rng_state : dict or None
        ``Generator.bit_generator.state`` at save time; :meth:`rng` rebuilds the generator.
    state : dict of str to numpy.ndarray
        The caller's ``state`` arrays (0-d arrays for scalars).
    """

    path: Path
    model: RNNClassifier
    epoch: int
    config: dict = field(default_factory=dict)
    rng_state: dict | None = None
    state: dict[str, np.ndarray] = field(default_factory=dict)

    def rng(self) -> np.random.Generator:
        """A ``numpy.random.Generator`` in the saved state (raises if none was saved)."""
        if self.rng_state is None:
            raise CheckpointError(f"{self.path}: holds no RNG state")
        bit_generator = getattr(np.random, self.rng_state["bit_generator"])()
        bit_generator.state = self.rng_state
        return np.random.Generator(bit_generator)


def checkpoint_path(directory: str | os.PathLike, epoch: int) -> Path:
    """``directory/epoch-NNNN.npz``, the file :func:`save_checkpoint` writes for ``epoch``."""
    return Path(directory) / f"epoch-{epoch:04d}.npz"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every checkpoint in ``directory``, oldest first ([] if none or no
    folder). Only names ``epoch-NNNN.npz`` count; temporary files are ignored."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m[1]), p) for p in d.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint of the highest epoch in ``directory``, or None."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def _json_entry(obj: Any) -> np.ndarray:
    return np.array(json.dumps(obj, sort_keys=True))


def _fsync_dir(path: Path) -> None:
    """Flush the folder's entry for a renamed file, where the file system allows it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


def save_checkpoint(directory: str | os.PathLike, model: RNNClassifier, epoch: int, *,
                    rng: np.random.Generator | None = None, config: Mapping[str, Any] | None = None,
                    state: Mapping[str, Any] | None = None, keep: int | None = 3) -> Path:
    """Write ``directory/epoch-NNNN.npz`` atomically; keep only the newest ``keep`` checkpoints.

    Parameters
    ----------
    directory : path
        Created if missing.
    model : RNNClassifier
        Saved with :meth:`RNNClassifier.save` (parameters, Adam moments and step).
    epoch : int
        Completed epochs (>= 0); names the file.
    rng : numpy.random.Generator, optional
        Its bit-generator state is saved, so shuffling continues as in an uninterrupted run.
    config : mapping of str to JSON values, optional
        The run's settings; :func:`load_checkpoint` refuses the file for a run whose settings
        differ.
    state : mapping of str to array-like, optional
        Anything else the loop needs to continue exactly (counters, running sums, history), as
        numeric or string arrays (no objects: nothing is pickled). Names must be identifiers.
    keep : int or None
        How many of the newest checkpoints to keep (>= 1); None keeps all.

    Returns
    -------
    Path
        The checkpoint written.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"epoch: expected an int >= 0, got {epoch!r}")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep: expected an int >= 1 or None, got {keep!r}")
    entries = {"ckpt_format": np.array(FORMAT_VERSION), "ckpt_epoch": np.array(int(epoch)),
               "ckpt_config": _json_entry(dict(config or {}))}
    if rng is not None:
        entries["ckpt_rng"] = _json_entry(rng.bit_generator.state)
    for name, value in (state or {}).items():
        if not str(name).isidentifier():
            raise ValueError(f"state: expected identifier names, got {name!r}")
        a = np.asarray(value)
        if a.dtype.hasobject:
            raise TypeError(f"state[{name!r}]: expected a numeric or string array, got dtype "
                            f"{a.dtype}")
        entries[_STATE + name] = a

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(d, epoch)
    model.save(final, extra=entries)  # the model's format plus ours; atomic and flushed
    _fsync_dir(d)
    if keep is not None:
        for _, old in list_checkpoints(d)[:-keep]:
            old.unlink(missing_ok=True)
    return final


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_checkpoint(path: str | os.PathLike, *, config: Mapping[str, Any] | None = None,
                    device: str = "cpu", backend: str | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : path
        The file (see :func:`latest_checkpoint`).
    config : mapping, optional
        This run's settings: every key given must equal the saved value (keys not given are not
        compared), else :class:`CheckpointError` lists the differences.
    device, backend
        Where the model runs, as in :class:`RNNClassifier`.

    Returns
    -------
    Checkpoint

    Raises
    ------
    FileNotFoundError
        No such file.
    CheckpointError
        The file is truncated, corrupted (CRC-32 of an entry), not a fastrnn checkpoint, of another
        format version, or from another configuration. The message names the file.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}  # reads every entry: a bad CRC raises here
    except FileNotFoundError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: damaged checkpoint, cannot be read "
                              f"({_one_line(e)})") from e
    if "ckpt_format" not in data:
        raise CheckpointError(f"{path}: not a fastrnn checkpoint (no ckpt_format entry; a model "
                              f"file from RNNClassifier.save?)")
    try:
        version = int(data["ckpt_format"])
        epoch = int(data["ckpt_epoch"])
        saved_config = json.loads(str(data["ckpt_config"]))
        rng_state = json.loads(str(data["ckpt_rng"])) if "ckpt_rng" in data else None
    except Exception as e:
        raise CheckpointError(f"{path}: damaged checkpoint ({_one_line(e)})") from e
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version}, this fastrnn reads "
                              f"{FORMAT_VERSION}")
    if config is not None:
        config = json.loads(json.dumps(dict(config)))  # compare as saved: tuples -> lists etc.
        diff = [f"{k} {saved_config[k]!r} (this run {v!r})" if k in saved_config
                else f"{k} missing (this run {v!r})"
                for k, v in config.items() if saved_config.get(k, _MISSING) != v]
        if diff:
            raise CheckpointError(f"{path}: checkpoint of another configuration: "
                                  + ", ".join(diff))
    try:
        model = RNNClassifier.load(path, device=device, backend=backend)
    except ValueError as e:  # sizes or arrays that do not make a model
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from e
    state = {k[len(_STATE):]: v for k, v in data.items() if k.startswith(_STATE)}
    return Checkpoint(path=path, model=model, epoch=epoch, config=saved_config,
                      rng_state=rng_state, state=state)


_MISSING = object()
