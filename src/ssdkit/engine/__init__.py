"""Training engine: config, builders, the train/evaluate loop, checkpoints, logging, ablations.

Nothing below this package knows about files, logging or the CLI; this package is where they meet.
"""
