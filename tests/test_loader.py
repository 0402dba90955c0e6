"""Training batches built in DataLoader workers (tlkit.train.loader)."""

from __future__ import annotations

import torch

from tlkit.train.loader import batch_stream, default_workers


def test_auto_workers_leave_a_two_core_machine_to_the_model() -> None:
    assert default_workers(1) == 0 and default_workers(2) == 0
    assert default_workers(4) == 2 and default_workers(16) == 4


class _Noisy:
    """A dataset whose items draw from torch's global generator, as augmentation does."""

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.rand(3) + i

    def __len__(self) -> int:
        return 10


def _collate(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack(items), torch.zeros(len(items))


def test_a_batch_is_a_function_of_seed_epoch_and_number_only() -> None:
    batches = [[0, 1], [2, 3], [4, 5]]
    torch.manual_seed(0)
    first = [x for x, _ in batch_stream(_Noisy(), _collate, batches, 0, 5, 1, 0)]
    after = torch.rand(1)
    torch.manual_seed(123)  # another global state: the same batches, and the state untouched
    again = [x for x, _ in batch_stream(_Noisy(), _collate, batches, 1, 5, 1, 0)]
    assert all(torch.equal(a, b) for a, b in zip(first[1:], again))
    torch.manual_seed(0)
    list(batch_stream(_Noisy(), _collate, batches, 0, 5, 1, 0))
    assert torch.equal(torch.rand(1), after)
    other = [x for x, _ in batch_stream(_Noisy(), _collate, batches, 0, 5, 2, 0)]
    assert not torch.equal(other[0], first[0])  # another epoch, other draws
