"""Model size and speed: MACs against a hand count, latency measurement leaves the model as it was."""

from __future__ import annotations

import torch
from torch import nn

from medcls.benchmark.profile import count_macs, measure_latency, profile_model


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)  # 4 x 9 x 64 = 2304 MACs at 8x8
        self.fc = nn.Linear(4 * 8 * 8, 2)  # 256 x 2 = 512 MACs

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class Fusion(nn.Module):
    """Takes a dict of modalities, like medcls's fusion models."""

    modalities = ("ct", "pet")

    def __init__(self) -> None:
        super().__init__()
        self.ct = nn.Conv3d(1, 2, 1)  # 2 x 1 x 64 = 128 MACs at 4^3
        self.pet = nn.Conv3d(1, 2, 1)

    def forward(self, x):
        return (self.ct(x["ct"]) + self.pet(x["pet"])).mean((2, 3, 4))


def test_macs_match_a_hand_count_2d_and_3d_dict_inputs():
    assert count_macs(Tiny(), torch.zeros(1, 1, 8, 8)) == 2304 + 512
    assert count_macs(Tiny(), torch.zeros(3, 1, 8, 8)) == 3 * (2304 + 512)
    volume = torch.zeros(1, 1, 4, 4, 4)
    assert count_macs(Fusion(), {"ct": volume, "pet": volume}) == 2 * 128


def test_profile_reports_size_and_keeps_the_model_state():
    model = Tiny().train()
    out = profile_model(model, torch.zeros(1, 1, 8, 8))
    assert out["params"] == 4 * 9 + 4 + 256 * 2 + 2 == out["trainable_params"]
    assert out["macs"] == 2816 and out["input_shape"] == [1, 1, 8, 8]
    assert out["latency_ms"] > 0 and out["latency_p90_ms"] >= out["latency_ms"]
    assert model.training  # restored
    timing = measure_latency(model, torch.zeros(1, 1, 8, 8), repeats=5)
    assert timing["repeats"] == 5 and timing["device"] == "cpu"
    assert profile_model(model, torch.zeros(1, 1, 8, 8), latency=False)["latency_ms"] is None
