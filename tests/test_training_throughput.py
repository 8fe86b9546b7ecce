"""The training-throughput benchmark times the recorded recipe of each channel of the weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.perf import training_throughput as T  # noqa: E402
from dimfeat.encoder import EncoderConfig, SiteNetEncoder  # noqa: E402
from dimfeat.training_config import TrainingConfig, settings_of_record  # noqa: E402
from dimfeat.weights import read_config, resolve_weights  # noqa: E402


def run(tmp_path: Path, *flags: str) -> dict:
    out = tmp_path / "training_throughput.json"
    T.main(["--n", "40", "--epochs", "1", "--json", str(out), *flags])
    return json.loads(out.read_text())


def n_parameters(encoder: dict) -> int:
    return sum(p.numel() for p in SiteNetEncoder(EncoderConfig.from_dict(encoder)).parameters())


@pytest.mark.parametrize("epochs", [1, 3])
def test_timing_config_replays_the_recorded_recipe_without_validation(epochs):
    config = read_config(resolve_weights("sitenet-dim-mp36k"))
    settings = config["channels"]["structure"]["source"]["training"]["settings"]
    timed = T.timing_config(settings, epochs)
    recorded = TrainingConfig(**settings_of_record(settings))
    assert timed.epochs == epochs
    assert (timed.validation_fraction, timed.patience, timed.max_seconds) == (0.0, None, None)
    assert recorded.validation_fraction > 0
    for name in ("false_samples", "global_trains_local", "site_budget", "local_pairs", "seed"):
        assert getattr(timed, name) == getattr(recorded, name)


def test_two_channel_weights_time_each_channel_recipe_and_architecture(tmp_path):
    result = run(tmp_path)
    config = read_config(resolve_weights("sitenet-dim-mp36k"))
    assert result["weights"] == "sitenet-dim-mp36k"
    assert set(result["channels"]) == {"context", "structure"}
    assert result["goal_epoch_s"] == 150.0
    assert len(result["load_average_start"]) == len(result["load_average_end"]) == 3
    for name, channel in result["channels"].items():
        block = config["channels"][name]
        training = block["source"]["training"]
        settings = settings_of_record(training["settings"])
        timed = channel["settings"]
        assert timed["epochs"] == 1 and timed["validation_fraction"] == 0.0
        assert tuple(timed["false_samples"]) == settings["false_samples"]
        assert timed["global_trains_local"] == settings["global_trains_local"]
        assert channel["encoder"] == EncoderConfig.from_dict(block["encoder"]).to_dict()
        cpu = channel["measured"]["cpu"]
        # the encoder trained has the channel's architecture (context: no distance input)
        assert cpu["n_parameters"] == n_parameters(block["encoder"])
        assert cpu["seconds_per_epoch"] > 0 and cpu["cpu_seconds_per_epoch"] > 0
        assert len(cpu["epoch_cpu_seconds"]) == len(cpu["epoch_seconds"]) == 1
        assert cpu["mp36k_epoch_s_by_crystals"] == pytest.approx(
            T.MP36K_TRAIN * cpu["seconds_per_epoch"] / result["n_crystals"]
        )
        assert cpu["meets_goal_by_crystals"] == (cpu["mp36k_epoch_s_by_crystals"] <= 150.0)
        recorded = channel["recorded"]
        assert recorded["epoch_seconds"] == [r["seconds"] for r in training["history"]]
        assert recorded["hardware"] == training["hardware"]
        assert "copied from the config" in recorded["source"]
    context = result["channels"]["context"]
    assert context["encoder"]["distance_input"] == "none"
    assert context["encoder"]["global_dim"] == 64
    assert context["settings"]["false_samples"] == ["other"]
    assert (
        context["measured"]["cpu"]["n_parameters"]
        != result["channels"]["structure"]["measured"]["cpu"]["n_parameters"]
    )


def test_single_channel_weights_time_their_one_recipe(tmp_path):
    result = run(tmp_path, "--weights", "sitenet-dim-mp36k-single-channel")
    config = read_config(resolve_weights("sitenet-dim-mp36k-single-channel"))
    assert list(result["channels"]) == ["single"]
    channel = result["channels"]["single"]
    assert channel["encoder"]["global_dim"] == 128
    assert channel["measured"]["cpu"]["n_parameters"] == n_parameters(config["encoder"])
    assert channel["settings"]["false_samples"] == list(
        settings_of_record(config["training"]["settings"])["false_samples"]
    )
    assert channel["recorded"]["hardware"] == config["training"]["hardware"]
