#!/usr/bin/env python3
"""Rewrite part of a volume image in place, deterministically, for the
restore-chain benchmark of benches/run.sh.

Usage: chain_mutate.py FILE GENERATION [--seed N] [--block-size BYTES]
                       [--percent P] [--hot-blocks N]

Generation GENERATION (2, 3, ...) rewrites:
  - about P percent of the file's blocks (default 1), at positions drawn
    with a generator seeded from (seed, generation), so every run of the
    benchmark produces the same chain;
  - a hot region of N blocks (default 64) a third of the way into the
    file, rewritten by every generation.
Each rewritten block is half pseudo-random bytes and half text naming the
generation and block, so that it compresses about 2:1, like real data.
Blocks are written with os.pwrite at block-aligned offsets; the file's
size never changes. Prints one line: how many blocks were rewritten.
"""

import argparse
import os
import random
import sys


def block_content(rng: random.Random, generation: int, index: int, size: int) -> bytes:
    half = size // 2
    noise = rng.randbytes(half)
    line = f"generation {generation:5d} block {index:10d} rewritten by chain_mutate.py\n".encode()
    text = (line * (size // len(line) + 1))[: size - half]
    return noise + text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("generation", type=int)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--block-size", type=int, default=16384)
    parser.add_argument("--percent", type=float, default=1.0)
    parser.add_argument("--hot-blocks", type=int, default=64)
    args = parser.parse_args()

    bs = args.block_size
    size = os.stat(args.file).st_size
    blocks = size // bs  # a short last block is never rewritten
    if blocks == 0:
        print(f"chain_mutate.py: {args.file} is smaller than one block", file=sys.stderr)
        return 1
    # One generator per (seed, generation): the same chain every run.
    rng = random.Random(args.seed * 1_000_003 + args.generation)
    count = max(1, round(blocks * args.percent / 100))
    positions = set(rng.sample(range(blocks), min(count, blocks)))
    hot_start = blocks // 3
    hot = set(range(hot_start, min(blocks, hot_start + args.hot_blocks)))

    fd = os.open(args.file, os.O_WRONLY)
    try:
        for index in sorted(positions | hot):
            data = block_content(rng, args.generation, index, bs)
            written = os.pwrite(fd, data, index * bs)
            if written != bs:
                raise OSError(f"short write at block {index}")
    finally:
        os.close(fd)
    print(f"generation {args.generation}: rewrote {len(positions | hot)} of {blocks} blocks "
          f"({len(positions)} random, {len(hot)} hot)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
