"""Where a segment's model time goes: the training step and a decoder's steps, exact against native.

For one preset, both numerics of the same config on random inputs (tokens, and count-model counts
in [0, 4)): the training step (score, coder weights, update), and what a decoder adds for the same
segment (prepare, prefill of the memory, then one step per position). The two numerics alternate
round by round, so machine noise falls on both; CPU time of this process, one core, one XLA
thread, compilation excluded. Prints a Markdown table; count models, coder and loop are not in it
(a decode's time per segment minus these is theirs).

    python experiments/step_parts.py [--preset default] [--rounds 8] [--set '{"count_shape": 0}']
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from prequential import numerics
from prequential.config import preset
from prequential.counts import CountInputs
from prequential.learner import learner_for, with_memory


class Parts:
    """One numerics' learner with fixed random inputs; `train` carries its state from call to call."""

    def __init__(self, config, rng: np.random.Generator) -> None:
        c = self.config = config
        self.learner = learner_for(c)
        self.window = rng.integers(0, c.vocab_size, (c.streams, c.window), dtype=np.int32)
        self.targets = rng.integers(0, c.vocab_size, (c.streams, c.segment), dtype=np.int32)
        shape = (c.streams, c.segment, c.count_channels, c.vocab_size)
        self.counts = CountInputs.of(rng.integers(0, 4, shape, dtype=np.uint16)) if c.count_channels else None
        self.state, self.memory = self.learner.init(), self.learner.initial_memory()

    def train(self) -> None:
        mask = np.ones(self.targets.shape, bool)
        self.state, _, weights, _ = self.learner.train(self.state, with_memory(self.window, self.memory), self.targets, mask, self.counts)
        jax.block_until_ready(weights)

    def steps(self) -> None:
        c, learner = self.config, self.learner
        variables = learner.prepare(self.state)
        cache = learner.prefill(variables, with_memory(self.window[:, : c.memory], self.memory))
        for i in range(c.segment):
            counts = None if self.counts is None else self.counts.position(i)
            weights, cache = learner.step(variables, cache, self.window[:, c.memory + i], c.memory + i, counts)
            np.asarray(weights)  # the coder needs them on the host before the next step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--set", default="{}", help="JSON object of config fields to change")
    args = parser.parse_args()
    numerics.activate("cpu", 1)
    rng = np.random.default_rng(0)
    config = preset(args.preset).replace(**json.loads(args.set))
    parts = {kind: Parts(config.replace(numerics=kind), rng) for kind in ("native", "exact")}
    for part in parts.values():  # compile, and leave the first updates out
        for _ in range(2):
            part.train()
            part.steps()
    times: dict[tuple[str, str], list[float]] = {(k, f): [] for k in parts for f in ("train", "steps")}
    for r in range(args.rounds):
        for kind in ("native", "exact") if r % 2 == 0 else ("exact", "native"):
            for name in ("train", "steps"):
                started = time.process_time()
                getattr(parts[kind], name)()
                times[(kind, name)].append(1000 * (time.process_time() - started))
    print(
        f"{args.preset} {args.set}: ms per segment ({config.streams} streams x {config.segment} positions), "
        f"median of {args.rounds} rounds (fastest in brackets)\n"
    )
    print("| numerics | training step | prepare, prefill and steps |\n|---|---:|---:|")
    for kind in parts:
        cells = [f"{np.median(times[(kind, f)]):.1f} ({min(times[(kind, f)]):.1f})" for f in ("train", "steps")]
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
