"""The Python side of tests/hf.rs: Hugging Face `transformers` as the oracle for our GPT-2.

    python tests/hf_oracle.py make DIR          a small random GPT-2, saved by transformers
                                                into DIR, with DIR/expected.json: its logits
                                                and greedy continuation of fixed ids
    python tests/hf_oracle.py check DIR [DIR...]  load each folder (our exports) with
                                                transformers; print, as JSON, the logits and
                                                greedy continuation of DIR/ids.json, the ids
                                                AutoTokenizer gives its text (when the folder
                                                has a tokenizer), and one training step's loss
                                                before and after on a fixed batch
"""

import json
import os
import sys

import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel


def greedy(model, ids, n):
    """Argmax decoding, the whole context every step (the definition, nothing cached)."""
    ids = list(ids)
    for _ in range(n):
        logits = model(torch.tensor([ids[-model.config.n_positions:]])).logits
        ids.append(int(logits[0, -1].argmax()))
    return ids[-n:]


def make(out):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=101, n_positions=24, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=None, eos_token_id=None)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # transformers starts biases at 0 and norms at 1: move every one
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(out)
    ids = [int(i) for i in torch.randint(0, config.vocab_size, (10,))]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
        continuation = greedy(model, ids, 30)  # past n_positions: the window moves
    expected = {"ids": ids, "logits": logits.tolist(), "greedy": continuation}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)


def check(folder):
    with open(os.path.join(folder, "ids.json")) as f:
        case = json.load(f)
    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    ids = case["ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
        continuation = greedy(model, ids, case["new_tokens"])
    result = {"logits": logits.tolist(), "greedy": continuation}
    if os.path.exists(os.path.join(folder, "tokenizer.json")):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        result["tokenizer_ids"] = tokenizer(case["text"])["input_ids"]
        result["decoded"] = tokenizer.decode(result["tokenizer_ids"])
    # Keep training with transformers: one AdamW step on a fixed batch lowers its loss.
    torch.manual_seed(0)
    batch = torch.randint(0, model.config.vocab_size, (4, model.config.n_positions))
    with torch.no_grad():
        before = model(batch, labels=batch).loss
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    model(batch, labels=batch).loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(batch, labels=batch).loss
    result["train_step"] = [float(before), float(after)]
    return result


if __name__ == "__main__":
    command, folders = sys.argv[1], sys.argv[2:]
    if command == "make":
        make(folders[0])
    elif command == "check":
        print(json.dumps({folder: check(folder) for folder in folders}))
    else:
        sys.exit(f"unknown command {command!r}")
