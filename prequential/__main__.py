"""The `prequential` command (and `python -m prequential`): set up the process, then run the CLI."""

import gc


def entry() -> None:
    # Importing JAX and loading the compiled programs allocate many objects that live as long as
    # the process, and at its default thresholds Python's collector walks them again and again:
    # 0.1-0.2 s of a command's start-up (docs/cli.md). The command makes little cyclic garbage, so
    # it collects rarely. Set before the imports, which is why this is its own module.
    gc.set_threshold(50_000, 20, 100)
    from prequential.cli import entry as run_cli

    run_cli()


if __name__ == "__main__":
    entry()
