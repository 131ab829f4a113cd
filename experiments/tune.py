"""Score configs on a file with the training pass alone (no coder; agrees with compress to ~1e-4).

    python experiments/tune.py FILE [--limit BYTES] [--threads 1] 'preset=default' 'preset=default,streams=4,segment=16' ...

Each argument is a comma-separated list of config fields (preset= names the base). Prints
bits/byte and the time of the pass for each. Used to choose the presets (see docs/ratio.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from prequential import config as configs
from prequential import numerics


def parse(spec: str) -> configs.Config:
    values = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        values[key] = value if key == "preset" else json.loads(value)
    return configs.from_dict(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("specs", nargs="+")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    numerics.activate("cpu", args.threads)
    from prequential.learner import Learner
    from prequential.replay import Layout, train_pass
    from prequential.store import ArrayStore

    data = Path(args.file).read_bytes()[: args.limit]
    tokens = np.frombuffer(data, np.uint8).astype(np.int32)
    for spec in args.specs:
        config = parse(spec)
        learner = Learner.create(config)
        layout = Layout(len(data), config.streams, config.segment)
        started = time.perf_counter()
        bits = train_pass(learner, layout, ArrayStore(tokens))[0].sum()
        print(f"{8 * 0 + bits / len(data):.4f} bits/byte  {time.perf_counter() - started:7.1f} s  {spec}", flush=True)


if __name__ == "__main__":
    main()
