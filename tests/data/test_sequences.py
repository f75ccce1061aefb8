"""The sequence container: something to train on."""

import numpy as np
import pytest

from famerec.data import require_training_pairs
from famerec.data.sequences import SequenceData, from_user_sequences
from famerec.errors import DataError


def small(user_ids=(1, 2), item_ids=(10, 20, 30), name="t") -> SequenceData:
    return from_user_sequences(
        name,
        np.array(user_ids),
        [np.array([1, 2, 3, 1]), np.array([3, 2, 1])],
        np.array(item_ids),
    )


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
