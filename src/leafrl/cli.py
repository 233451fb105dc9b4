"""The ``leafrl`` command line: thin wrappers that parse options and call the library.

Options that mirror a config field default to None and are passed on only when given, so
every default lives once, in the config dataclass.
"""

from __future__ import annotations

import torch
import typer
from rich.console import Console

from leafrl import __version__
from leafrl.advantages import LeafConfig, grpo_advantages, leaf_advantages

app = typer.Typer(
    name="leafrl",
    help="LEAF (Low-rank Exploration with Adaptive Forking): RL post-training of speech-aware LLMs.",
    no_args_is_help=True,
    add_completion=False,
)

# The spec's worked example as German translations: responses 1-3 share "der rote Hund",
# 1-2 share the first 7 words, 4 shares nothing; the model was least sure at words 3 and 7.
EXAMPLE = [
    "der rote Hund läuft schnell über die Straße zum Park",
    "der rote Hund läuft schnell über die Brücke ins Haus",
    "der rote Hund schläft den ganzen Tag im warmen Haus",
    "ein roter Hund rennt auf der Straße zum großen Park",
]
EXAMPLE_REWARDS = [0.6, 0.4, 0.2, 0.0]
EXAMPLE_SURPRISAL = [5.0 if t == 3 else 4.0 if t == 7 else 0.1 * t for t in range(10)]


def _default(field: str) -> str:
    """A LeafConfig default for --help, so the CLI never restates one."""
    return str(getattr(LeafConfig(), field))


@app.callback()
def main() -> None:
    """LEAF samples K responses per prompt like GRPO, then finds their shared prefixes after the
    fact and gives each span of a response its own advantage."""


@app.command()
def version() -> None:
    """Print the leafrl version."""
    typer.echo(__version__)


@app.command()
def explain(
    fork_budget: int | None = typer.Option(None, help="B, boundaries per group",
                                           show_default=_default("fork_budget")),
    min_prefix_tokens: int | None = typer.Option(None, help="earliest boundary position",
                                                 show_default=_default("min_prefix_tokens")),
    terms: str | None = typer.Option(None, help="both | global | local", show_default=_default("terms")),
    normalize: str | None = typer.Option(None, help="span_zscore | none", show_default=_default("normalize")),
    boundaries: str | None = typer.Option(None, help="surprisal | trie", show_default=_default("boundaries")),
) -> None:
    """Walk through LEAF's credit assignment on the paper's worked example (K = 4 translations)."""
    given = {"fork_budget": fork_budget, "min_prefix_tokens": min_prefix_tokens, "terms": terms,
             "normalize": normalize, "boundaries": boundaries}
    try:
        config = LeafConfig(**{k: v for k, v in given.items() if v is not None})
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    from leafrl.viz.tree import render_group

    words = [s.split() for s in EXAMPLE]
    vocab = {w: i for i, w in enumerate(sorted({w for ws in words for w in ws}))}
    ids = torch.tensor([[vocab[w] for w in ws] for ws in words])
    rewards = torch.tensor(EXAMPLE_REWARDS, dtype=torch.float64)
    group = torch.zeros(len(words), dtype=torch.long)
    _, stats, tree = leaf_advantages(ids, torch.ones_like(ids, dtype=torch.bool),
                                     torch.tensor([EXAMPLE_SURPRISAL] * len(words)), rewards, group,
                                     config, return_tree=True)
    console = Console()
    console.print(f"[bold]{config}[/bold]")
    console.print(render_group(words, rewards, grpo_advantages(rewards, group), tree, stats))


if __name__ == "__main__":
    app()
