"""Data for leafrl: the Example row, readers for manifests and HF datasets, the paper's prompt
templates, and converters for the public releases (:mod:`leafrl.data.converters`).

Every reader yields :class:`Example`; every failure is a :class:`DataError` naming the file and
the row id (or line).
"""

from leafrl.data.schema import DataError, Example, example_from_row
from leafrl.data.sources import count_rows, load_split, read_hf_dataset, read_manifest, split_source
from leafrl.data.templates import AST_EVAL_PROMPT, TASK_AST, TASK_SQA, ast_prompt, sqa_prompt

__all__ = [
    "AST_EVAL_PROMPT",
    "TASK_AST",
    "TASK_SQA",
    "DataError",
    "Example",
    "ast_prompt",
    "count_rows",
    "example_from_row",
    "load_split",
    "read_hf_dataset",
    "read_manifest",
    "split_source",
    "sqa_prompt",
]
