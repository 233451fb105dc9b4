"""Time leaf_advantages against the plain per-group reference, in the same run, on one thread.

    python benchmarks/bench_advantages.py [--prompts 64 512] [--k 8] [--tokens 200]

Batches look like sampled responses: the K responses of a prompt follow a shared base text
and leave it at random points (so prefixes are shared), lengths vary (EOS), and surprisal is
exponential. Prints milliseconds per call (median) and the speed-up over the reference; GRPO
plus its broadcast to tokens is printed beside LEAF as the floor any per-token method pays, and
leafrl's credit (``leafrl_advantages``) with its ratio to LEAF's time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_leaf import reference_leaf  # noqa: E402  (the readable per-group version)

from leafrl.advantages import LeafConfig, grpo_advantages, leaf_advantages  # noqa: E402
from leafrl.token_credit import leafrl_advantages  # noqa: E402


def make_batch(prompts: int, k: int, tokens: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    n = prompts * k
    base = torch.randint(0, 32000, (prompts, tokens), generator=gen).repeat_interleave(k, 0)
    own = torch.randint(0, 32000, (n, tokens), generator=gen)
    leave = (torch.rand(n, generator=gen) ** 2 * tokens).long()[:, None]  # early forks likelier
    ids = torch.where(torch.arange(tokens) < leave, base, own)  # [N, T]
    lengths = torch.randint(tokens // 2, tokens + 1, (n, 1), generator=gen)
    mask = torch.arange(tokens) < lengths
    surprisal = torch.empty(n, tokens).exponential_(generator=gen).masked_fill(~mask, float("nan"))
    rewards = torch.rand(n, generator=gen)
    group_ids = torch.arange(prompts).repeat_interleave(k)
    return ids, mask, surprisal, rewards, group_ids


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = LeafConfig()
    print(f"torch {torch.__version__}, 1 thread, K={args.k}, T={args.tokens}, {config}")
    header = f"{'prompts':>8} {'rows':>6} {'reference ms':>13} {'leaf ms':>9} {'speed-up':>9} " \
             f"{'grpo+bcast ms':>14} {'leaf trie ms':>13} {'leafrl ms':>10} {'leafrl/leaf':>12}"
    print(header)
    for prompts in args.prompts:
        bench(prompts, args.k, args.tokens, args.repeat, config)


def bench(prompts: int, k: int, tokens: int, repeat: int, config: LeafConfig) -> None:
    ids, mask, sur, rewards, gids = make_batch(prompts, k, tokens)
    lists = ([row[m].tolist() for row, m in zip(ids, mask)],
             [row[m].tolist() for row, m in zip(sur, mask)], rewards.tolist(), gids.tolist())
    trie = LeafConfig(boundaries="trie")
    ref_ms = median_ms(lambda: reference_leaf(*lists), repeat=3)
    leaf_ms = median_ms(lambda: leaf_advantages(ids, mask, sur, rewards, gids, config), repeat)
    trie_ms = median_ms(lambda: leaf_advantages(ids, mask, sur, rewards, gids, trie), repeat)
    grpo_ms = median_ms(lambda: grpo_advantages(rewards, gids)[:, None] * mask, repeat)
    leafrl_ms = median_ms(lambda: leafrl_advantages(ids, mask, rewards, gids), repeat)
    print(f"{prompts:>8} {len(ids):>6} {ref_ms:>13.1f} {leaf_ms:>9.2f} {ref_ms / leaf_ms:>8.0f}x "
          f"{grpo_ms:>14.3f} {trie_ms:>13.2f} {leafrl_ms:>10.2f} {leafrl_ms / leaf_ms:>11.2f}x")

if __name__ == "__main__":
    main()
