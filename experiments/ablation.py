"""What each lever of the default buys (issue 14): the default with one lever off at a time.

Scores the default preset, and the default with each of its levers turned off, with the training
pass alone (it agrees with a real encode to about 1e-4; docs/measure-speed.md), on the first BYTES
of files of many kinds (as the command would code them: executables through the x86 filter), and
writes docs/ratio-levers.md. A cell is how much larger the output is without the lever, in % of
the default's bits on that file: what the lever buys there (negative: it costs).

    python experiments/ablation.py [--files canterbury/alice29.txt,broad/make,...] [--bytes 100000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np
from common import CORPORA, DOCS, jobs_note, per_file, per_file_options, provenance

from prequential import transform
from prequential.config import NO_COUNTS, Config, preset
from prequential.learner import learner_for
from prequential.replay import Layout, train_pass
from prequential.store import ArrayStore

BROAD = Path(__file__).resolve().parent / "out" / "corpus"  # experiments/corpus.py's
# Prose, an executable, a word list and a table. A worker loads every config's programs once per
# file (learner_for keeps 16 learners), about 1,100 memory mappings each: five files a worker ran
# out of Linux's 65,530.
FILES = "canterbury/alice29.txt,broad/libXt.so.6.0.0,broad/american-english,broad/airports.csv"
# Each lever of the default, and the settings that turn it off.
LEVERS = [
    ("the count models (the transformer alone, learning rate 1e-3)", {**NO_COUNTS, "learning_rate": 1e-3}),
    ("byte contexts of orders 5 and 6 (orders 1-4 kept)", {"count_orders": 4}),
    ("sparse contexts (2nd last byte; 2nd and 3rd last bytes)", {"count_sparse": 0}),
    ("the third word context (two previous words with the current one)", {"count_words": 1}),
    ("all word contexts", {"count_words": 0}),
    ("column contexts (the byte above)", {"count_columns": 0}),
    ("record contexts (detected record length)", {"count_records": 0}),
    ("indirect context (bytes that followed the last two bytes)", {"count_indirect": 0}),
    ("shape context (byte classes of the last 8 bytes)", {"count_shape": 0}),
    ("order 0 (the empty context)", {"count_order0": 0}),
    ("nesting context (open brackets and quotes)", {"count_nest": 0}),
    ("match model", {"match_model": 0}),
    ("decay of long contexts' counts", {"count_decay": 0}),
    ("each stream's own order-3 counts", {"count_own_order": 0}),
    ("calibration of counts per context state", {"count_states": 0}),
    ("mixing weights selected by the last byte", {"count_select": 0}),
    ("mixing weights learning at half the rate", {"count_weight_rate": 1.0}),
    ("x86 call/jump filter of executables", {"x86_filter": 0}),
    ("Transformer-XL memory cache (memory recomputed each segment)", {"memory_cache": 0}),
    ("learning-rate decay", {"lr_decay_tokens": 0}),
]


def bits_per_byte(config: Config, data: bytes) -> tuple[float, float]:
    """(bits/byte of the training pass on `data`, its speed in KB/s, compilation included)."""
    tokens = transform.encode_tokens(config, np.frombuffer(data, np.uint8).astype(np.int32))
    started = time.perf_counter()
    bits = train_pass(learner_for(config), Layout(len(tokens), config.streams, config.segment), ArrayStore(tokens))[0].sum()
    return float(bits) / len(data), len(data) / 1000 / (time.perf_counter() - started)


def file_column(path: Path, size: int) -> list[list[float]]:
    """[bits/byte, KB/s] of the default, then of each lever turned off, on the first `size` bytes."""
    data = path.read_bytes()[:size]
    cells = []
    for _, changes in [("default", {}), *LEVERS]:
        cells.append(list(bits_per_byte(preset("default").replace(**changes), data)))
        print(f"{path.name} {changes}: {cells[-1][0]:.4f}", flush=True)
    return cells


def corpus_path(name: str) -> Path:
    return BROAD / name.removeprefix("broad/") if name.startswith("broad/") else CORPORA / name


def main() -> None:
    # The command's compilation cache: each of the 21 configs compiles once per machine, not once
    # per worker and run (and with it, its traced programs are kept too: prequential/programs.py).
    jax.config.update("jax_compilation_cache_dir", str(Path.home() / ".cache" / "prequential" / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", default=FILES, help="comma-separated paths under the corpora; broad/NAME for corpus.py's")
    parser.add_argument("--bytes", type=int, default=100_000, help="the first this many bytes of each file")
    per_file_options(parser)
    args = parser.parse_args()
    files = [corpus_path(name) for name in args.files.split(",")]
    columns = per_file(__file__, files, args, lambda path: file_column(path, args.bytes), ["--bytes", str(args.bytes)])
    names = [path.name for path in files]
    files_option = "" if args.files == FILES else f" --files {args.files}"
    lines = [
        "# What each lever buys (generated by experiments/ablation.py)",
        "",
        f"{provenance(1)}{jobs_note(args)}",
        "",
        f"`python experiments/ablation.py{files_option} --bytes {args.bytes} --jobs {args.jobs}`.",
        "The training pass alone (no header, code or coder)",
        f"on the first {args.bytes:,} bytes of each file, executables through the x86 filter as the command codes them. The first",
        "row is the default preset's bits/byte and, in brackets, the pass's speed in KB/s (compilation included). Every other",
        "row turns one lever of the default off: how much larger the output is without it, in % of the default's bits on",
        "that file. Positive: the lever helps there; negative: the file is smaller without it.",
        "",
        "| lever | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(files),
        "| default preset, bits/byte (KB/s) | " + " | ".join(f"{c[0][0]:.4f} ({c[0][1]:.1f})" for c in columns) + " |",
    ]
    for i, (label, _) in enumerate(LEVERS, start=1):
        lines.append(f"| {label} | " + " | ".join(f"{100 * (c[i][0] / c[0][0] - 1):+.2f}" for c in columns) + " |")
    text = "\n".join(lines) + "\n"
    (DOCS / "ratio-levers.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
