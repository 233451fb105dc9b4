"""The plain log-prob and rollout implementations that ``completion_logprobs`` and
``generate_completions`` replaced (the float32 logits [N, T, V]; every step's [N, V] scores kept by
``generate``): the readable references of tests/test_vocab_memory.py and the baseline of
benchmarks/bench_vocab_memory.py."""

import torch


def reference_logprobs(model, inputs, completion_ids, completion_mask, keeps_logits, prompt_of_row=None,
                       temperature=1.0, entropy=False):
    """``completion_logprobs`` as it was: the model's logits [N, T, V] in float32, log-softmax, gather;
    with ``entropy``, also -sum p log p of each position's softmax."""
    from leafrl.models.base import SEQUENCE_KEYS, generation_positions, prefill_prompts
    from leafrl.models.logprobs import checkpointed

    g = inputs["attention_mask"].shape[0]
    n, t = completion_ids.shape
    if prompt_of_row is None:
        prompt_of_row = torch.arange(g, device=completion_ids.device)
    shared = not checkpointed(model)
    cache = prefill_prompts(model, inputs, prompt_of_row, keeps_logits) if shared else None
    prompt_mask = inputs["attention_mask"][prompt_of_row]
    attention = torch.cat([prompt_mask, completion_mask[:, :-1].to(prompt_mask.dtype)], 1)
    start = prompt_mask.shape[1] - 1 if shared else 0
    positions = generation_positions(attention)[:, start:]
    if "inputs_embeds" in inputs:
        embed = getattr(model, "module", model).get_input_embeddings()
        embeds = inputs["inputs_embeds"]
        tail = {"inputs_embeds": torch.cat([embeds[prompt_of_row, start:],
                                            embed(completion_ids[:, :-1]).to(embeds.dtype)], 1)}
    else:
        tail = {"input_ids": torch.cat([inputs["input_ids"][prompt_of_row, start:], completion_ids[:, :-1]], 1)}
        if not shared:
            tail |= {k: v[prompt_of_row] for k, v in inputs.items() if k not in SEQUENCE_KEYS}
    kw = {"logits_to_keep": t} if keeps_logits and not shared else {}
    out = model(**tail, attention_mask=attention, position_ids=positions, past_key_values=cache, use_cache=shared,
                **kw)
    logits = out.logits[:, -t:].float()  # [N, T, V]
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(2, completion_ids[:, :, None]).squeeze(2)
    logp = (picked - torch.logsumexp(logits, dim=-1)).masked_fill(~completion_mask, 0.0)
    if not entropy:
        return logp
    log_softmax = logits.log_softmax(-1)
    return logp, -(log_softmax.exp() * log_softmax).sum(-1).masked_fill(~completion_mask, 0.0)


@torch.no_grad()
def reference_rollout(model, family, inputs, *, max_new_tokens, num_samples=1, do_sample=True,
                      temperature=1.0, top_p=1.0, surprisal="processed"):
    """``generate_completions`` as it was: generate keeps every step's [N, V] scores, read after."""
    from leafrl.models.base import SEQUENCE_KEYS, prefill_prompts, repeat_rows
    from leafrl.rollout.hf import RESHAPING, completion_mask
    from leafrl.rollout.record import Rollout, grouped

    sampling = {name: off for name, off in RESHAPING.items() if hasattr(model.generation_config, name)}
    sampling |= {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if do_sample \
        else {"do_sample": False}
    if family.suppress_token_ids:
        sampling["suppress_tokens"] = family.suppress_token_ids
    group_ids = grouped(num_samples, inputs["attention_mask"].shape[0], inputs["attention_mask"].device)
    cache = prefill_prompts(model, inputs, group_ids, family.keeps_logits)
    keys = [k for k in inputs if k in SEQUENCE_KEYS] if cache is not None else list(inputs)
    rows = repeat_rows({k: inputs[k] for k in keys}, num_samples, keys)
    out = model.generate(**rows, past_key_values=cache, **sampling, max_new_tokens=max_new_tokens,
                         pad_token_id=family.pad_token_id, eos_token_id=family.eos_token_ids,
                         return_dict_in_generate=True,
                         output_scores=surprisal == "processed", output_logits=surprisal == "raw")
    ids = out.sequences[:, inputs["input_ids"].shape[1]:] if "input_ids" in inputs else out.sequences
    mask = completion_mask(ids, family.eos_token_ids)
    ids = ids.masked_fill(~mask, family.pad_token_id)
    steps = out.scores if surprisal == "processed" else out.logits
    return Rollout(ids, mask, reference_surprisal(steps, ids).masked_fill(~mask, 0.0), group_ids)


def reference_surprisal(steps, ids, chunk=32):
    """-log softmax(step_t)[ids_t] -> [N, T] float32, from generate's per-step [N, V] scores."""
    out = []
    for start in range(0, len(steps), chunk):
        block = torch.stack(steps[start:start + chunk], 1).float()  # [N, c, V]
        picked = block.gather(2, ids[:, start:start + chunk, None]).squeeze(2)
        out.append(torch.logsumexp(block, -1) - picked)
    return torch.cat(out, 1) if out else ids.new_zeros(ids.shape, dtype=torch.float32)
