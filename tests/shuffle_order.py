"""A pytest plugin that runs the tests in a shuffled order, to find tests that pass only
after (or before) another one: shared caches, patched globals, environment variables.

    SHUFFLE_SEED=1 python -m pytest -p tests.shuffle_order -n 2

Every xdist worker shuffles with the same seed, so all agree on the order. (A model first
run under torch.inference_mode failing later training steps was found this way round.)
"""

import os
import random


def pytest_collection_modifyitems(session, config, items):
    random.Random(int(os.environ.get("SHUFFLE_SEED", "1"))).shuffle(items)
