"""The sequence container: atomic save, refusing damaged files, fingerprint, trainability."""

import os
import struct
import zipfile

import numpy as np
import pytest

from famerec.data import fingerprint, require_training_pairs
from famerec.data import sequences as sequences_module
from famerec.data.sequences import SequenceData, from_user_sequences
from famerec.errors import DataError, FamerecError


def small(user_ids=(1, 2), item_ids=(10, 20, 30), name="t") -> SequenceData:
    return from_user_sequences(
        name,
        np.array(user_ids),
        [np.array([1, 2, 3, 1]), np.array([3, 2, 1])],
        np.array(item_ids),
    )


def test_save_replaces_the_file_atomically(tmp_path, monkeypatch):
    path = tmp_path / "dataset.npz"
    small().save(path)

    def fail_halfway(handle, **arrays):
        handle.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(sequences_module.np, "savez_compressed", fail_halfway)
    with pytest.raises(FamerecError, match="cannot write .*dataset.npz: disk full"):
        small(item_ids=(7, 8, 9)).save(path)
    assert SequenceData.load(path).item_ids.tolist() == [10, 20, 30]  # the old file, whole
    assert os.listdir(tmp_path) == ["dataset.npz"]  # no temporary file left behind


def test_save_keeps_the_name_it_is_given(tmp_path):
    small().save(tmp_path / "data.bin")  # no ".npz" appended
    assert os.listdir(tmp_path) == ["data.bin"]
    assert SequenceData.load(tmp_path / "data.bin").num_users == 2


def damaged_files(path):
    """(label, bytes) of damaged versions of the dataset file at `path`."""
    whole = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo("items.npy")
    name_length, extra_length = struct.unpack(
        "<HH", whole[member.header_offset + 26 : member.header_offset + 30]
    )
    start = member.header_offset + 30 + name_length + extra_length
    flipped = bytearray(whole)
    flipped[start + member.compress_size // 2] ^= 0xFF  # in the compressed items: CRC or zlib
    return [
        ("a byte changed", bytes(flipped)),
        ("truncated", whole[: len(whole) // 2]),
        ("cut before the directory", whole[:-30]),
        ("empty", b""),
        ("not a zip", b"user item\n1 2 3\n"),
    ]


def test_damaged_file_is_one_clear_data_error(tmp_path):
    path = tmp_path / "dataset.npz"
    small().save(path)
    for label, content in damaged_files(path):
        bad = tmp_path / "bad.npz"
        bad.write_bytes(content)
        with pytest.raises(DataError) as error:
            SequenceData.load(bad)
        message = str(error.value)
        assert message.startswith(f"{bad}: not a usable famerec dataset file ("), label
        assert "\n" not in message, label


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"offsets": np.array([0, 4, 9])}, "offsets do not span the items"),
        ({"offsets": np.array([0, 5, 4, 7])}, "decreasing offsets"),
        ({"items": np.array([1, 2, 3, 1, 3, 2, 4])}, "item ids outside 1..3"),
        ({"user_ids": np.array([1])}, "1 user ids for 2 users"),
        ({"items": np.array([1.0, 2, 3, 1, 3, 2, 1])}, "non-integer items or offsets"),
    ],
)
def test_inconsistent_file_is_a_data_error(tmp_path, change, problem):
    data = small()
    arrays = {
        "name": np.array("t"),
        "items": data.items,
        "offsets": data.offsets,
        "user_ids": data.user_ids,
        "item_ids": data.item_ids,
    }
    arrays.update(change)
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError) as error:
        SequenceData.load(tmp_path / "d.npz")
    assert (
        str(error.value) == f"{tmp_path / 'd.npz'}: not a usable famerec dataset file ({problem})"
    )


def test_missing_array_is_a_data_error(tmp_path):
    np.savez(tmp_path / "d.npz", items=np.array([1, 2, 3]))
    with pytest.raises(DataError, match=r"not a usable famerec dataset file \(KeyError: "):
        SequenceData.load(tmp_path / "d.npz")


# -- fingerprint -----------------------------------------------------------------------------


def test_fingerprint_is_pinned_and_survives_save_and_load(tmp_path):
    data = small(user_ids=("u1", "u2"), item_ids=("a", "bb", "ccc"))
    digest = fingerprint(data)
    assert digest == PINNED_FINGERPRINT  # a change here breaks --resume checks of old runs
    data.save(tmp_path / "d.npz")
    assert fingerprint(SequenceData.load(tmp_path / "d.npz")) == digest


PINNED_FINGERPRINT = "739ffa9b589883c8d7e41333c9a46b8fdec7b7f3152654420ce7fa19008c8438"


def test_fingerprint_sees_sequences_and_both_id_mappings_but_not_the_name():
    base = fingerprint(small())
    assert fingerprint(small(name="renamed")) == base
    assert fingerprint(small(item_ids=(10, 20, 31))) != base
    assert fingerprint(small(item_ids=("10", "20", "30"))) != base  # 10 and "10" differ
    assert fingerprint(small(user_ids=(2, 1))) != base
    reordered = from_user_sequences(
        "t", np.array([1, 2]), [np.array([1, 2, 1, 3]), np.array([3, 2, 1])], np.array([10, 20, 30])
    )
    assert fingerprint(reordered) != base
    moved_boundary = from_user_sequences(
        "t", np.array([1, 2]), [np.array([1, 2, 3]), np.array([1, 3, 2, 1])], np.array([10, 20, 30])
    )
    assert fingerprint(moved_boundary) != base


# -- something to train on -------------------------------------------------------------------


def test_users_of_three_items_leave_nothing_to_train_on():
    three = from_user_sequences(
        "three", np.array([1, 2]), [np.array([1, 2, 3]), np.array([3, 2, 1])], np.arange(3)
    )
    with pytest.raises(DataError) as error:
        require_training_pairs(three)
    assert str(error.value) == (
        "dataset 'three' has no user with more than 3 items, so nothing is left to train on "
        "(leave-one-out holds out each user's last 2 items; training needs users with at least 4)"
    )
    assert require_training_pairs(small()) is not None  # one user of 4 items is enough
