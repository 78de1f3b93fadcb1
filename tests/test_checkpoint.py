"""fastrnn.checkpoint: round trip, atomic writes, pruning, and clear errors for bad files."""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import pytest

import fastrnn
from fastrnn.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

CONFIG = {"layers": 2, "hidden": 7, "batch_size": 4, "lr": 1e-2, "seed": 3, "shuffle": True}


def trained_model(steps: int = 3) -> fastrnn.RNNClassifier:
    model = fastrnn.RNNClassifier(5, 7, 2, 4, lr=1e-2, seed=3, backend="reference")
    rng = np.random.default_rng(0)
    for _ in range(steps):
        model.train_step(rng.standard_normal((4, 6, 5)).astype(np.float32),
                         rng.integers(0, 4, size=4))
    return model


@pytest.fixture
def saved(tmp_path):
    """A directory holding one checkpoint of a 3-step model, and what went into it."""
    model, rng = trained_model(), np.random.default_rng(42)
    rng.permutation(10)  # advance it: the saved state is not the seed's
    state = {"step": 17, "losses": np.array([0.5, 0.25]), "name": "run-a",
             "history": np.arange(8.0).reshape(2, 4)}
    path = save_checkpoint(tmp_path, model, 2, rng=rng, config=CONFIG, state=state)
    return path, model, rng, state


def test_round_trip(saved):
    path, model, rng, state = saved
    assert path == checkpoint_path(path.parent, 2) and path.name == "epoch-0002.npz"
    c = load_checkpoint(path, config=CONFIG, backend="reference")
    assert c.path == path and c.epoch == 2 and c.config == CONFIG
    for name in ("params", "m", "v"):
        np.testing.assert_array_equal(getattr(c.model, name), getattr(model, name), err_msg=name)
    assert c.model.step == model.step == 3
    assert (c.model.lr, c.model.seed) == (model.lr, model.seed)
    # the restored generator continues exactly where the saved one was
    np.testing.assert_array_equal(c.rng().permutation(1000), rng.permutation(1000))
    assert int(c.state["step"]) == 17 and str(c.state["name"]) == "run-a"
    np.testing.assert_array_equal(c.state["losses"], state["losses"])
    np.testing.assert_array_equal(c.state["history"], state["history"])
    # and training continues identically
    x = np.ones((4, 6, 5), np.float32)
    y = np.array([0, 1, 2, 3])
    assert c.model.train_step(x, y) == model.train_step(x, y)
    np.testing.assert_array_equal(c.model.params, model.params)


def test_a_checkpoint_is_also_a_model_file(saved):
    path, model, _, _ = saved
    loaded = fastrnn.RNNClassifier.load(path, backend="reference")
    np.testing.assert_array_equal(loaded.params, model.params)


def test_config_keys_not_given_are_not_compared(saved):
    path = saved[0]
    assert load_checkpoint(path, config={"hidden": 7}).epoch == 2
    assert load_checkpoint(path).epoch == 2


@pytest.mark.parametrize("change, message", [
    ({"hidden": 31}, "hidden 7 (this run 31)"),
    ({"lr": 1e-3}, "lr 0.01 (this run 0.001)"),
    ({"shuffle": False, "seed": 0}, "seed 3 (this run 0), shuffle True (this run False)"),
    ({"dropout": 0.5}, "dropout missing (this run 0.5)"),
])
def test_other_configuration_is_refused_naming_file_and_keys(saved, change, message):
    path = saved[0]
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, config=CONFIG | change)
    text = str(e.value)
    assert text.startswith(f"{path}: checkpoint of another configuration: ") and "\n" not in text
    assert message in text


def test_keep_prunes_oldest_and_latest_is_highest_epoch(tmp_path):
    model = trained_model(1)
    assert latest_checkpoint(tmp_path) is None and latest_checkpoint(tmp_path / "nope") is None
    for epoch in range(1, 6):
        save_checkpoint(tmp_path, model, epoch, keep=2)
    assert [e for e, _ in list_checkpoints(tmp_path)] == [4, 5]
    assert latest_checkpoint(tmp_path) == tmp_path / "epoch-0005.npz"
    save_checkpoint(tmp_path, model, 9999, keep=None)
    save_checkpoint(tmp_path, model, 10000, keep=None)  # by epoch number, not by name
    assert latest_checkpoint(tmp_path).name == "epoch-10000.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-0004.npz", "epoch-0005.npz", "epoch-10000.npz", "epoch-9999.npz"]


@pytest.mark.parametrize("keep", [1, 3, None])
def test_an_epoch_below_the_newest_checkpoint_is_refused_and_nothing_pruned(tmp_path, keep):
    """An earlier run left epoch 5: a run starting over must not write epoch 1 (resuming would
    take 5), and epoch 1 with keep=1 must never be pruned as soon as written."""
    model = trained_model(1)
    save_checkpoint(tmp_path, model, 5, keep=keep)
    with pytest.raises(ValueError, match=r"epoch: expected an epoch >= 5, that of the newest "
                       r"checkpoint .*epoch-0005\.npz .*, got 1$"):
        save_checkpoint(tmp_path, model, 1, keep=keep)
    assert [e for e, _ in list_checkpoints(tmp_path)] == [5]
    # the same epoch again is overwritten, and the next is written and kept
    assert save_checkpoint(tmp_path, model, 5, keep=keep).exists()
    assert save_checkpoint(tmp_path, model, 6, keep=keep) == latest_checkpoint(tmp_path)
    assert [e for e, _ in list_checkpoints(tmp_path)] == ([6] if keep == 1 else [5, 6])


def test_numpy_integers_and_scalars_in_config_are_accepted(tmp_path):
    config = {"lr": np.float32(0.5), "layers": np.int64(2), "shuffle": np.bool_(True),
              "sizes": (np.int32(3), 4), "name": np.str_("a")}
    path = save_checkpoint(tmp_path, trained_model(1), np.int64(3), keep=np.int64(2),
                           config=config)
    assert path.name == "epoch-0003.npz"
    c = load_checkpoint(path, config=config)  # compared as saved
    assert c.epoch == 3 and c.config == {"lr": 0.5, "layers": 2, "shuffle": True,
                                         "sizes": [3, 4], "name": "a"}
    assert type(c.config["lr"]) is float and type(c.config["shuffle"]) is bool


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_interrupted_write_leaves_no_checkpoint_and_no_temp_file(saved, monkeypatch, exc):
    path, model, _, _ = saved
    before = path.read_bytes()
    marker = np.array([7.5, 7.25])
    real = np.lib.format.write_array

    def failing_write_array(f, a, **kw):  # dies after the model part is already on disk
        if np.array_equal(a, marker):
            raise exc
        return real(f, a, **kw)

    monkeypatch.setattr(np.lib.format, "write_array", failing_write_array)
    for epoch in (2, 3):  # over the existing checkpoint, and a new one
        with pytest.raises(type(exc)):
            save_checkpoint(path.parent, model, epoch, config=CONFIG, state={"boom": marker})
    monkeypatch.undo()
    assert sorted(p.name for p in path.parent.iterdir()) == ["epoch-0002.npz"], "temp file left"
    assert path.read_bytes() == before, "the previous checkpoint was touched"
    assert load_checkpoint(path, config=CONFIG).epoch == 2


@pytest.mark.parametrize("keep_bytes", [0, 10, 0.5, -1])
def test_truncated_file_is_an_error_naming_it(saved, keep_bytes):
    path = saved[0]
    data = path.read_bytes()
    n = int(len(data) * keep_bytes) if isinstance(keep_bytes, float) else keep_bytes % len(data)
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, config=CONFIG)
    assert str(e.value).startswith(f"{path}: damaged checkpoint") and "\n" not in str(e.value)


def _payload_offset(path, member: str) -> int:
    """Byte offset of the first data byte of ``member`` in the zip (after its local header)."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    raw = path.read_bytes()
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    return info.header_offset + 30 + name_len + extra_len


@pytest.mark.parametrize("member, skip", [
    ("params.npy", 200),        # a weight, past the .npy header
    ("v.npy", 10),              # inside the .npy header
    ("ckpt_config.npy", 140),   # the JSON configuration
    ("ckpt_epoch.npy", -1),     # the last byte of the epoch number
])
def test_flipped_byte_is_an_error_naming_it(saved, member, skip):
    path = saved[0]
    with zipfile.ZipFile(path) as z:
        size = z.getinfo(member).file_size
    pos = _payload_offset(path, member) + (skip % size)
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, config=CONFIG)
    assert str(e.value).startswith(f"{path}: damaged checkpoint") and "\n" not in str(e.value)
    assert "CRC" in str(e.value)


def test_model_file_and_other_npz_are_not_checkpoints(tmp_path):
    model_file = tmp_path / "model.npz"
    trained_model(1).save(model_file)
    with pytest.raises(CheckpointError, match=r"model\.npz: not a fastrnn checkpoint"):
        load_checkpoint(model_file)
    other = tmp_path / "epoch-0001.npz"
    np.savez(other, ckpt_format=1, ckpt_epoch=1, ckpt_config="{}")
    with pytest.raises(CheckpointError, match=r"epoch-0001\.npz: not a fastrnn model file"):
        load_checkpoint(other)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.npz")


def test_format_version_is_checked(saved, tmp_path):
    path = saved[0]
    with zipfile.ZipFile(path) as z, zipfile.ZipFile(tmp_path / "v9.npz", "w") as out:
        for info in z.infolist():
            if info.filename == "ckpt_format.npy":
                with out.open(info.filename, "w") as f:
                    np.lib.format.write_array(f, np.array(9))
            else:
                out.writestr(info, z.read(info))
    with pytest.raises(CheckpointError, match="checkpoint format 9, this fastrnn reads 1"):
        load_checkpoint(tmp_path / "v9.npz")


@pytest.mark.parametrize("kwargs, error, message", [
    ({"epoch": -1}, ValueError, "epoch: expected an int >= 0, got -1"),
    ({"epoch": 1.0}, ValueError, "epoch: expected an int >= 0, got 1.0"),
    ({"keep": 0}, ValueError, "keep: expected an int >= 1 or None, got 0"),
    ({"keep": True}, ValueError, "keep: expected an int >= 1 or None, got True"),
    ({"state": {"bad name": 1}}, ValueError, "state: expected identifier names, got 'bad name'"),
    ({"state": {"obj": [object()]}}, TypeError, "state['obj']: expected a numeric or string"),
    ({"model": "model.npz"}, TypeError, "model: expected an RNNClassifier, got str 'model.npz'"),
    ({"rng": np.random.RandomState(0)}, TypeError,
     "rng: expected a numpy.random.Generator or None, got RandomState"),
    # NaN != NaN: a run could never resume from it
    ({"config": {"lr": float("nan")}}, ValueError,
     "config['lr']: expected finite numbers (a NaN config could never be matched on resuming), "
     "got nan"),
    ({"config": {"a": {"b": [1, np.float32("inf")]}}}, ValueError,
     "config['a']['b'][1]: expected finite numbers"),
    ({"config": {"w": np.zeros(2)}}, TypeError, "config['w']: expected JSON values (str, int, "
                                                "float, bool, None, and lists and dicts of them), "
                                                "got numpy array of shape (2,)"),
    ({"config": {1: 2}}, TypeError, "config: expected str keys, got int 1"),
    ({"config": [("lr", 1)]}, TypeError, "config: expected a mapping of str to JSON values or "
                                         "None, got list"),
])
def test_bad_arguments(tmp_path, kwargs, error, message):
    kwargs = {"model": trained_model(1), "epoch": 1} | kwargs
    with pytest.raises(error) as e:
        save_checkpoint(tmp_path, **kwargs)
    assert message in str(e.value)
    assert list(tmp_path.iterdir()) == []


def _with_entry(path, name: str, value) -> None:
    """Rewrite the checkpoint at ``path`` with entry ``name`` replaced by ``value``."""
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    np.savez(path, **(data | {name: np.asarray(value)}))


@pytest.mark.parametrize("name, value, message", [
    ("ckpt_rng", '{"bit_generator": "Nope"}', "ckpt_rng: expected the state of a NumPy bit "
                                              "generator, got {'bit_generator': 'Nope'}"),
    ("ckpt_rng", '{"bit_generator": "BitGenerator"}', "ckpt_rng: NotImplementedError"),
    ("ckpt_rng", '{"bit_generator": "PCG64", "state": 3}', "ckpt_rng: TypeError"),
    ("ckpt_rng", '{"bit_generator": "MT19937", "state": {}}', "ckpt_rng: KeyError"),
    ("ckpt_rng", "[1, 2]", "ckpt_rng: expected the state of a NumPy bit generator, got [1, 2]"),
    ("ckpt_epoch", -5, "ckpt_epoch: expected an int >= 0, got -5"),
    ("ckpt_epoch", 2.0, "ckpt_epoch: expected an int >= 0, got numpy array of shape () and "
                        "dtype float64"),
    ("ckpt_config", "[1]", "ckpt_config: expected a JSON object, got list"),
])
def test_a_damaged_checkpoint_entry_is_a_checkpoint_error(saved, name, value, message):
    path = saved[0]
    _with_entry(path, name, value)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(f"{path}: damaged checkpoint (") and message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("state", [{"bit_generator": "Nope"}, {"bit_generator": "PCG64"}, [1]])
def test_rng_of_a_damaged_state_is_a_checkpoint_error(saved, state):
    c = dataclasses.replace(load_checkpoint(saved[0]), rng_state=state)
    with pytest.raises(CheckpointError, match=r"epoch-0002\.npz: damaged checkpoint \(ckpt_rng: "):
        c.rng()
