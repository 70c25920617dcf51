r"""
---
title: Sana, the text encoder
summary: A small decoder-only language model trained here on the shapes captions, standing in for Gemma-2 - a word tokenizer with BOS and padding, a causal transformer trained on next-token prediction, and its last hidden states as the text tokens.
---

# The text encoder: a small decoder-only language model

Sana reads prompts through **Gemma-2-2B-IT**, a decoder-only LLM, where earlier
text-to-image models used the encoder of T5. It takes the LLM's last hidden states (not
its next-token predictions) as the text tokens. A decoder-only model sees each token
only with the tokens before it, so Sana relies on cross-attention, which reads all of
them, and on a long instruction prepended to the prompt ("complex human instruction")
that makes the LLM's states more about the image wanted.

We cannot download Gemma. The shapes captions ([[data.py#the-dataset]]) use a
vocabulary of 21 words, so a small language model trained here in a few minutes learns
them: a word tokenizer ([[#the-tokenizer]]), a causal transformer of width 128 trained to
predict the next word ([[#the-language-model]]), and its last hidden states, after the
final layer norm, as the text tokens ([[#encoding-captions]]). Like Sana's, our encoder
is trained on text alone, frozen, and never sees an image. We keep BOS at the start of
every caption, as Sana does, so that even the empty caption (the null condition of
guidance) has one token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from annogen.data import COLOUR_NAMES, POSITIONS, SHAPES, SIZES
from annogen.train import Budgeted


# ## The tokenizer
#
# One token per word. Index 0 is padding, 1 is BOS (begin), 2 is EOS (end); then every
# word that can appear in a caption. A caption becomes `[BOS, w_1, ..., w_n, EOS]`,
# padded to `max_length`; the mask is 1 on real tokens. An unknown word is an error that
# names it: the model could not have learnt it.
SPECIALS = ("<pad>", "<bos>", "<eos>")
WORDS = sorted({"a", "in", "the", "and", *SIZES, *COLOUR_NAMES, *SHAPES,
                *(w for p in POSITIONS for w in p.split())})
VOCAB = SPECIALS + tuple(WORDS)
PAD, BOS, EOS = 0, 1, 2
INDEX = {w: i for i, w in enumerate(VOCAB)}


def tokenize(captions: list[str], max_length: int = 24) -> tuple[Tensor, Tensor]:
    r"""Token ids (B, max_length) and mask (B, max_length) for a list of captions."""
    ids = torch.zeros(len(captions), max_length, dtype=torch.long)
    for row, caption in enumerate(captions):
        words = caption.lower().split()
        unknown = [w for w in words if w not in INDEX]
        if unknown:
            raise ValueError(f"caption {caption!r}: unknown word {unknown[0]!r} (the text "
                             f"encoder knows only the shapes vocabulary)")
        tokens = [BOS] + [INDEX[w] for w in words] + [EOS]
        if len(tokens) > max_length:
            raise ValueError(f"caption {caption!r} has {len(tokens)} tokens, more than {max_length}")
        ids[row, : len(tokens)] = torch.tensor(tokens)
    return ids, (ids != PAD).long()


# ## The language model
#
# A GPT in miniature: token and learned position embeddings, pre-norm blocks of causal
# self-attention and a GELU MLP, a final layer norm and a linear head tied to nothing.
# Causal: position $i$ sees positions $\le i$, as in Gemma.
class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(B, L, 3, self.heads, C // self.heads) \
            .permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(B, L, C))
        return x + self.mlp(self.ln2(x))


class TextEncoder(nn.Module):
    def __init__(self, dim: int = 128, depth: int = 2, heads: int = 4, max_length: int = 24):
        super().__init__()
        self.dim, self.max_length = dim, max_length
        self.tok = nn.Embedding(len(VOCAB), dim)
        self.pos = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, len(VOCAB))

    # The last hidden states (B, L, dim): what Sana's caption projection reads.
    def hidden_states(self, ids: Tensor) -> Tensor:
        x = self.tok(ids) + self.pos[: ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(self.hidden_states(ids))

    # Next-token cross-entropy, over real targets only (not padding).
    def loss(self, ids: Tensor) -> Tensor:
        logits = self(ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                               ignore_index=PAD)

    # ## Encoding captions
    #
    # Text tokens and mask for a list of captions: what [[model.py#Sana.forward]] takes as
    # `text` and `text_mask`.
    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        ids, mask = tokenize(captions, self.max_length)
        device = self.pos.device
        return self.hidden_states(ids.to(device)), mask.to(device)


# ## Training it
#
# On the captions of the training images, on the course's loop ([[train.py]]): AdamW,
# learning rate $10^{-3}$, a few hundred steps. The metric is the loss; by the end it
# is close to the entropy of the captions themselves (every attribute is drawn
# uniformly, so most words cannot be predicted; "in the" can).
class TextExperiment(Budgeted):
    name = "sana"

    def __init__(self, dim: int = 128, depth: int = 2, heads: int = 4, max_length: int = 24):
        self.settings = dict(dim=dim, depth=depth, heads=heads, max_length=max_length)

    def configure(self, device: torch.device) -> None:
        self.model = TextEncoder(**self.settings).to(device)
        self.modules = {"text": self.model}
        self.optimizers = {"text": torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr)}

    def training_step(self, batch: dict, step: int, loop) -> dict:
        self.stop_if_out_of_time(step, loop)
        ids, _ = tokenize(list(batch["caption"]), self.settings["max_length"])
        loss = self.modules["text"].loss(ids.to(self.model.pos.device))
        loop.backward_step(loss, "text")
        return {"loss": loss}

    def extra_state(self) -> dict:
        return {"text_config": self.settings}


def demo() -> None:
    torch.manual_seed(0)
    enc = TextEncoder()
    caps = ["a small red circle in the top left and a large blue square in the centre", ""]
    ids, mask = tokenize(caps)
    states, m = enc.encode(caps)
    print(f"vocabulary {len(VOCAB)} words; ids {ids[0, :8].tolist()} ...; "
          f"mask sums {mask.sum(1).tolist()}")
    print(f"text encoder {sum(p.numel() for p in enc.parameters()):,} parameters; "
          f"states {tuple(states.shape)}")
    # Causality, checked: changing the last word leaves earlier states unchanged.
    other, _ = enc.encode(["a small red circle in the top left and a large blue square in the top left"])
    n = 14
    print(f"first {n} states unchanged by a later word: "
          f"{torch.allclose(other[0, :n], states[0, :n], atol=1e-6)}")


if __name__ == "__main__":
    demo()
