"""Yes/No scoring (TALLRec Sec. 4.2): P(Yes) from the first answer token's logits, softmaxed over {Yes, No}.

One batched forward pass per batch of prompts: no `generate`. Prompts are sorted by length so a batch pads
little, then the scores are put back in the records' order.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from raylib.data.records import TallrecRecord
from raylib.encoding import answer_token_ids, collate_left_padded, encode_for_scoring
from raylib.metrics import binary_report


def encode_all(tokenizer, records: list[TallrecRecord], max_length: int):
    return [encode_for_scoring(tokenizer, r, max_length, where=f"record {i}") for i, r in enumerate(records)]


@torch.no_grad()
def yes_probabilities(model, tokenizer, records: list[TallrecRecord], max_length: int = 512,
                      batch_size: int = 16, progress: bool = True, encoded=None) -> np.ndarray:
    """P("Yes." | prompt) for each record, in the records' order."""
    encoded = encoded if encoded is not None else encode_all(tokenizer, records, max_length)
    yes_id, no_id = answer_token_ids(tokenizer)
    device = next(model.parameters()).device
    order = np.argsort([len(e.input_ids) for e in encoded], kind="stable")
    probs = np.empty(len(encoded), dtype=np.float64)
    was_training = model.training
    model.eval()
    batches = range(0, len(order), batch_size)
    for start in tqdm(batches, desc="scoring", disable=not progress, leave=False):
        index = order[start:start + batch_size]
        batch = collate_left_padded([encoded[i] for i in index], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(**batch, use_cache=False, logits_to_keep=1).logits[:, -1, :]
        pair = torch.stack([logits[:, yes_id], logits[:, no_id]], dim=-1).float()
        probs[index] = pair.softmax(dim=-1)[:, 0].cpu().numpy()
    model.train(was_training)
    return probs


def evaluate_records(model, tokenizer, records: list[TallrecRecord], max_length: int = 512,
                     batch_size: int = 16, progress: bool = True) -> dict[str, float]:
    """AUC, LogLoss and accuracy of P(Yes) against the records' labels."""
    probs = yes_probabilities(model, tokenizer, records, max_length, batch_size, progress)
    return binary_report([r.label for r in records], probs)


@torch.no_grad()
def yes_probabilities_by_generate(model, tokenizer, records: list[TallrecRecord], max_length: int = 512,
                                  max_new_tokens: int = 128, progress: bool = True) -> np.ndarray:
    """The original TALLRec evaluation, kept as a reference for benchmarks: `generate(output_scores=True)`
    one prompt at a time, then the Yes/No softmax of the first generated step's scores."""
    yes_id, no_id = answer_token_ids(tokenizer)
    device = next(model.parameters()).device
    model.eval()
    probs = np.empty(len(records), dtype=np.float64)
    for i, enc in enumerate(tqdm(encode_all(tokenizer, records, max_length), desc="generate-scoring",
                                 disable=not progress, leave=False)):
        ids = torch.tensor([enc.input_ids], device=device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, num_beams=1, output_scores=True, return_dict_in_generate=True,
                             pad_token_id=tokenizer.pad_token_id)
        first = out.scores[0][0].float()
        probs[i] = torch.stack([first[yes_id], first[no_id]]).softmax(-1)[0].item()
    return probs
