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
import math
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastrnn import _validate as check
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
        """A ``numpy.random.Generator`` in the saved state (:class:`CheckpointError` if none was
        saved or the state is not one)."""
        if self.rng_state is None:
            raise CheckpointError(f"{self.path}: holds no RNG state")
        return _generator(self.path, self.rng_state)


def _generator(path: Path, state: Any) -> np.random.Generator:
    """A Generator whose bit generator is in ``state`` (the ``ckpt_rng`` entry of ``path``), or
    :class:`CheckpointError` naming the file."""
    kind = state.get("bit_generator") if isinstance(state, dict) else None
    cls = getattr(np.random, kind, None) if isinstance(kind, str) else None
    if not (isinstance(cls, type) and issubclass(cls, np.random.BitGenerator)):
        raise CheckpointError(f"{path}: damaged checkpoint (ckpt_rng: expected the state of a "
                              f"NumPy bit generator, got {str(state)[:80]})")
    try:
        bit_generator = cls()
        bit_generator.state = state
    except Exception as e:  # NumPy's own check of the state: Key-, Type-, ValueError, ...
        raise CheckpointError(f"{path}: damaged checkpoint (ckpt_rng: {_one_line(e)})") from e
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


def _config(config: Any) -> dict:
    """The ``config`` argument (a mapping, or None for none) as JSON data (see
    :func:`_plain_config`)."""
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config: expected a mapping of str to JSON values or None, got "
                        f"{check._describe(config)}")
    return _plain_config("config", config or {})


def _plain_config(name: str, value: Any) -> Any:
    """``value`` (the ``config``, or the part of it called ``name``) as JSON data: NumPy scalars
    become Python ones, tuples lists. Refused: keys that are not str, values JSON cannot hold, and
    NaN or inf (NaN equals nothing, so a run could never match the saved configuration)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        check.fail(name, "finite numbers (a NaN config could never be matched on resuming)",
                   value)
    if value is None or isinstance(value, (str, int, float)):  # bool is an int
        return value
    if isinstance(value, Mapping):
        if bad := [k for k in value if not isinstance(k, str)]:
            raise TypeError(f"{name}: expected str keys, got {check._describe(bad[0])}")
        return {k: _plain_config(f"{name}[{k!r}]", v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_config(f"{name}[{i}]", v) for i, v in enumerate(value)]
    raise TypeError(f"{name}: expected JSON values (str, int, float, bool, None, and lists and "
                    f"dicts of them), got {check._describe(value)}")


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
        Completed epochs (>= 0); names the file. At least the epoch of every checkpoint
        already in ``directory`` (the same epoch is overwritten): runs resume from the
        highest-numbered checkpoint, so a lower epoch, typically a run starting over in a folder
        that an earlier run left further along, is refused with a ``ValueError`` naming that
        checkpoint before anything is written or pruned (use another folder, or remove the old
        checkpoints). The checkpoint written is thus always the newest; ``keep`` never prunes it.
    rng : numpy.random.Generator, optional
        Its bit-generator state is saved, so shuffling continues as in an uninterrupted run.
    config : mapping of str to JSON values, optional
        The run's settings; :func:`load_checkpoint` refuses the file for a run whose settings
        differ. NumPy scalars are saved as Python numbers; NaN and inf are refused (NaN equals
        nothing: the run could never be resumed).
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
    if not isinstance(model, RNNClassifier):
        raise TypeError(f"model: expected an RNNClassifier, got {check._describe(model)}")
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise ValueError(f"epoch: expected an int >= 0, got {epoch!r}")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, numbers.Integral)
                             or keep < 1):
        raise ValueError(f"keep: expected an int >= 1 or None, got {keep!r}")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator or None, got "
                        f"{check._describe(rng)}")
    epoch = int(epoch)
    entries = {"ckpt_format": np.array(FORMAT_VERSION), "ckpt_epoch": np.array(epoch),
               "ckpt_config": _json_entry(_config(config))}
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
    found = list_checkpoints(d)
    if found and found[-1][0] > epoch:
        check.fail("epoch", f"an epoch >= {found[-1][0]}, that of the newest checkpoint "
                   f"{found[-1][1]} (runs resume from the newest: to start over, use another "
                   f"directory or remove it)", epoch)
    d.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(d, epoch)
    model.save(final, extra=entries)  # the model's format plus ours; atomic and flushed
    _fsync_dir(d)
    if keep is not None:  # the highest epoch is the one just written: never pruned
        for _, old in list_checkpoints(d)[:-keep]:
            old.unlink(missing_ok=True)
    return final


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_checkpoint(path: str | os.PathLike, *, config: Mapping[str, Any] | None = None,
                    device: str = "cpu", backend: str | None = None, comm=None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : path
        The file (see :func:`latest_checkpoint`).
    config : mapping, optional
        This run's settings: every key given must equal the saved value (keys not given are not
        compared), else :class:`CheckpointError` lists the differences.
    device, backend, comm
        Where the model runs, as in :class:`RNNClassifier` (``comm``: every process of it calls
        this with the same file).

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
        epoch = data["ckpt_epoch"]
        saved_config = json.loads(str(data["ckpt_config"]))
        rng_state = json.loads(str(data["ckpt_rng"])) if "ckpt_rng" in data else None
    except Exception as e:
        raise CheckpointError(f"{path}: damaged checkpoint ({_one_line(e)})") from e
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version}, this fastrnn reads "
                              f"{FORMAT_VERSION}")
    if epoch.shape != () or epoch.dtype.kind not in "iu" or epoch < 0:
        got = epoch if epoch.shape == () and epoch.dtype.kind in "iu" else check._describe(epoch)
        raise CheckpointError(f"{path}: damaged checkpoint (ckpt_epoch: expected an int >= 0, got "
                              f"{got})")
    if not isinstance(saved_config, dict):
        raise CheckpointError(f"{path}: damaged checkpoint (ckpt_config: expected a JSON object, "
                              f"got {type(saved_config).__name__})")
    if rng_state is not None:
        _generator(path, rng_state)  # refuse a damaged state now, not when the loop asks for it
    if config is not None:
        config = _config(config)  # compare as saved: tuples -> lists etc.
        diff = [f"{k} {saved_config[k]!r} (this run {v!r})" if k in saved_config
                else f"{k} missing (this run {v!r})"
                for k, v in config.items() if saved_config.get(k, _MISSING) != v]
        if diff:
            raise CheckpointError(f"{path}: checkpoint of another configuration: "
                                  + ", ".join(diff))
    try:
        model = RNNClassifier.load(path, device=device, backend=backend, comm=comm)
    except ValueError as e:  # sizes or arrays that do not make a model
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from e
    state = {k[len(_STATE):]: v for k, v in data.items() if k.startswith(_STATE)}
    return Checkpoint(path=path, model=model, epoch=int(epoch), config=saved_config,
                      rng_state=rng_state, state=state)


_MISSING = object()
