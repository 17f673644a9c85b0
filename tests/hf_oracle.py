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
    python tests/hf_oracle.py generate DIR PROMPT N
                                                load DIR (a model and its tokenizer) with
                                                transformers; print, as JSON, the prompt's ids,
                                                their logits, and the text of N greedy tokens
                                                from `generate`
    python tests/hf_oracle.py tokenizers DIR CORPUS SAMPLES
                                                byte-level BPE tokenizer.json files as the
                                                `tokenizers` library writes them (trained on
                                                CORPUS: special token first) in DIR/tokenizers,
                                                as transformers saves a GPT-2 tokenizer in
                                                DIR/transformers, and one of SmolLM2's kind
                                                (digits split one by one) in DIR/digits; print,
                                                as JSON, each one's ids of the texts in SAMPLES
                                                (a JSON list)
    python tests/hf_oracle.py train DIR BATCHES SETTINGS OUT
                                                continue training DIR (an export) in PyTorch,
                                                with scripts/train_ddp.py's schedule and AdamW
                                                on one process: one step per pair
                                                x_S, y_S of BATCHES (a safetensors file), split
                                                into micro-batches, with AdamW, its decay groups,
                                                clipping and warmup + cosine from SETTINGS (a
                                                JSON file); save the result into OUT and print,
                                                as JSON, each step's loss and gradient norm
    python tests/hf_oracle.py llama DIR         three small random LlamaForCausalLM, saved by
                                                transformers with expected.json as `make` writes
                                                it: DIR/gqa (2 of 4 heads for keys and values,
                                                the head tied, rotary base 500,000), DIR/mha
                                                (4 of 4, untied, base 10,000) and DIR/llama3
                                                (1 of 4, tied, Llama 3's rotary scaling)
    python tests/hf_oracle.py check-llama DIR   load DIR (our Llama export) with transformers'
                                                AutoModelForCausalLM; print, as JSON, the
                                                logits and greedy continuation of DIR/ids.json,
                                                its end-of-text id, and with a tokenizer.json
                                                the ids AutoTokenizer gives its text
    python tests/hf_oracle.py gpt2-124m DIR     a random GPT-2 of the 124M size (GPT2Config's
                                                defaults: 498 MB of float32), saved by
                                                transformers into DIR
"""

import json
import os
import sys

import torch
import torch.nn.functional as F
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM)


def greedy(model, ids, n):
    """Argmax decoding, the whole context every step (the definition, nothing cached)."""
    ids = list(ids)
    for _ in range(n):  # GPT-2's n_positions is max_position_embeddings too
        logits = model(torch.tensor([ids[-model.config.max_position_embeddings:]])).logits
        ids.append(int(logits[0, -1].argmax()))
    return ids[-n:]


def make(out):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=101, n_positions=24, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=None, eos_token_id=None)
    save_with_expected(GPT2LMHeadModel(config).eval(), out, 30)  # past n_positions: the window moves


def save_with_expected(model, out, new_tokens):
    """Move every weight off its start (transformers starts biases at 0 and norms at 1), save
    the model into out, and write out/expected.json: the logits of 10 random ids, and their
    greedy continuation of new_tokens."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(out)
    ids = [int(i) for i in torch.randint(0, model.config.vocab_size, (10,))]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
        continuation = greedy(model, ids, new_tokens)
    expected = {"ids": ids, "logits": logits.tolist(), "greedy": continuation}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)


# Llama 3's rotary scaling, squeezed so that it changes every pair within 24 positions.
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 16}


def llama(folder):
    for case, kv_heads, tied, theta, scaling in [("gqa", 2, True, 500000.0, None), ("mha", 4, False, 10000.0, None),
                                                 ("llama3", 1, True, 10000.0, LLAMA3_SCALING)]:
        llama_case(os.path.join(folder, case), kv_heads, tied, theta, scaling)


def llama_case(out, kv_heads, tied, theta, scaling):
    torch.manual_seed(0)
    rope = {"rope_type": "default", "rope_theta": theta} if scaling is None else {**scaling, "rope_theta": theta}
    config = LlamaConfig(vocab_size=101, max_position_embeddings=24, hidden_size=32, intermediate_size=48,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=kv_heads,
                         tie_word_embeddings=tied, rope_parameters=rope, rms_norm_eps=1e-5,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    save_with_expected(LlamaForCausalLM(config).eval(), out, 10)  # 20 positions of the 24


def check_llama(folder):
    with open(os.path.join(folder, "ids.json")) as f:
        case = json.load(f)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert type(model).__name__ == "LlamaForCausalLM", type(model).__name__
    with torch.no_grad():
        logits = model(torch.tensor([case["ids"]])).logits[0]
        continuation = greedy(model, case["ids"], case["new_tokens"])
    result = {"logits": logits.tolist(), "greedy": continuation, "eos_token_id": model.config.eos_token_id}
    if os.path.exists(os.path.join(folder, "tokenizer.json")):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        result["tokenizer_ids"] = tokenizer(case["text"])["input_ids"]
        result["decoded"] = tokenizer.decode(result["tokenizer_ids"])
    print(json.dumps(result))


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


def generate(folder, prompt, n):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    ids = tokenizer(prompt)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=int(n), do_sample=False, pad_token_id=0)
    new = out[0, len(ids):].tolist()
    assert len(new) == int(n), f"generate stopped after {len(new)} tokens (an end-of-text token?)"
    return {"ids": ids, "logits": logits.tolist(), "new_ids": new, "text": tokenizer.decode(new)}


def tokenizers(out, corpus, samples_file):
    from tokenizers import ByteLevelBPETokenizer, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    with open(corpus) as f:
        text = f.read()
    trained = ByteLevelBPETokenizer()
    trained.train_from_iterator([text], vocab_size=400, min_frequency=1,
                                special_tokens=["<|endoftext|>"], show_progress=False)
    os.makedirs(os.path.join(out, "tokenizers"))
    trained.save(os.path.join(out, "tokenizers", "tokenizer.json"))
    # GPT-2's own tokenizer.json came this way: vocab.json and merges.txt read by transformers.
    trained.save_model(out)
    gpt2_kind = GPT2TokenizerFast(vocab=os.path.join(out, "vocab.json"), merges=os.path.join(out, "merges.txt"))
    gpt2_kind.save_pretrained(os.path.join(out, "transformers"))
    # SmolLM2's (and StarCoder's) kind: every digit a piece of its own, then ByteLevel's regex.
    digits = Tokenizer(models.BPE())
    digits.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    digits.decoder = decoders.ByteLevel()
    digits.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    os.makedirs(os.path.join(out, "digits"))
    digits.save(os.path.join(out, "digits", "tokenizer.json"))
    with open(samples_file) as f:
        samples = json.load(f)
    by_tokenizers = Tokenizer.from_file(os.path.join(out, "tokenizers", "tokenizer.json"))
    by_transformers = AutoTokenizer.from_pretrained(os.path.join(out, "transformers"))
    by_digits = Tokenizer.from_file(os.path.join(out, "digits", "tokenizer.json"))
    return {
        "tokenizers": {"vocab_size": by_tokenizers.get_vocab_size(),
                       "ids": [by_tokenizers.encode(s).ids for s in samples]},
        "transformers": {"vocab_size": len(by_transformers),
                         "ids": [by_transformers(s)["input_ids"] for s in samples]},
        "digits": {"vocab_size": by_digits.get_vocab_size(),
                   "ids": [by_digits.encode(s).ids for s in samples]},
    }


def train(folder, batches_file, settings_file, out):
    from safetensors.torch import load_file

    with open(settings_file) as f:
        s = json.load(f)
    batches = load_file(batches_file)
    # scripts/train_ddp.py's schedule and AdamW: the loop below is its loop on one process.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
    from train_ddp import adamw, lr_at

    model = GPT2LMHeadModel.from_pretrained(folder)
    model.train()  # dropout is 0: train mode computes what eval mode does
    params = list(model.parameters())
    optimizer = adamw(model, s)
    losses, norms = [], []
    for step in range(s["steps"]):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, s)
        xs = batches[f"x_{step}"].chunk(s["grad_accum"])
        ys = batches[f"y_{step}"].chunk(s["grad_accum"])
        total = 0.0
        for x, y in zip(xs, ys):
            logits = model(x).logits
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1)) / s["grad_accum"]
            loss.backward()
            total += loss.item()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, s["grad_clip"])))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(total)
    model.save_pretrained(out)
    return {"losses": losses, "grad_norms": norms}


def gpt2_124m(out):
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(out)


if __name__ == "__main__":
    command, folders = sys.argv[1], sys.argv[2:]
    if command == "make":
        make(folders[0])
    elif command == "llama":
        llama(folders[0])
    elif command == "check-llama":
        check_llama(folders[0])
    elif command == "gpt2-124m":
        gpt2_124m(folders[0])
    elif command == "train":
        print(json.dumps(train(*folders)))
    elif command == "generate":
        print(json.dumps(generate(*folders)))
    elif command == "tokenizers":
        print(json.dumps(tokenizers(*folders)))
    elif command == "check":
        print(json.dumps({folder: check(folder) for folder in folders}))
    else:
        sys.exit(f"unknown command {command!r}")
