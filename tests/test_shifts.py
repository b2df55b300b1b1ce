import pytest
import torch

from aelf.core.data import shift_images, shifted_test_sets


def grid():
    return torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1.0


@pytest.mark.parametrize(
    "direction,d_row,d_col",
    [("L", 0, -1), ("R", 0, 1), ("U", -1, 0), ("D", 1, 0)],
)
def test_every_pixel_moves_by_k_and_the_rest_is_zero(direction, d_row, d_col):
    x, k = grid(), 2
    out = shift_images(x, direction, k)
    for r in range(6):
        for c in range(6):
            src_r, src_c = r - d_row * k, c - d_col * k
            expected = x[..., src_r, src_c] if 0 <= src_r < 6 and 0 <= src_c < 6 else torch.zeros(2, 1)
            assert torch.equal(out[..., r, c], expected), (direction, r, c)


def test_left_shift_by_hand():
    x = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]])
    assert shift_images(x, "L", 1).flatten().tolist() == [2.0, 3.0, 4.0, 0.0]
    assert shift_images(x, "R", 1).flatten().tolist() == [0.0, 1.0, 2.0, 3.0]


def test_shift_of_zero_is_identity_and_large_shift_is_blank():
    x = grid()
    assert torch.equal(shift_images(x, "U", 0), x)
    assert torch.count_nonzero(shift_images(x, "D", 6)) == 0


def test_the_five_test_sets_of_fig3():
    x = torch.rand(3, 1, 32, 32)
    sets = shifted_test_sets(x, 8)
    assert list(sets) == ["N", "N(L)", "N(R)", "N(U)", "N(D)"]
    assert torch.equal(sets["N"], x)
    assert torch.equal(sets["N(U)"][..., :24, :], x[..., 8:, :])
    assert torch.count_nonzero(sets["N(U)"][..., 24:, :]) == 0


def test_unknown_direction():
    with pytest.raises(ValueError):
        shift_images(grid(), "X", 1)
