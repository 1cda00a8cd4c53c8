"""The foundation's accuracy bar, on SensorScenes with default settings (about a minute on 2 cores)."""

import pytest

from edgefuse.data import load_sensorscenes
from edgefuse.train import TrainConfig, subset_accuracy, train


@pytest.mark.slow
def test_gated_fusion_meets_the_sensorscenes_bar():
    data = load_sensorscenes()
    result = train(data, TrainConfig(fusion="gated"), progress=False)
    acc = subset_accuracy(result.model, data["test"])
    names = data.modality_names
    singles = {n: acc[n] for n in names}
    full = acc["+".join(names)]
    # all sensors beat the best single sensor by >= 5 points
    assert full >= max(singles.values()) + 0.05, acc
    # any one sensor missing: >= the best remaining single sensor - 1 point
    for drop in names:
        rest = [n for n in names if n != drop]
        assert acc["+".join(rest)] >= max(singles[n] for n in rest) - 0.01, (drop, acc)
    # each sensor alone beats chance (1/6), none alone is enough
    assert min(singles.values()) > 1 / 6 + 0.1
