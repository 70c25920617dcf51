r"""
---
title: VAR, the autoencoder
summary: VQGAN's encoder and decoder with the multi-scale quantiser in between, 3x3 convolutions around it, and the paper's 109M-parameter configuration.
---

# VAR: the autoencoder

VAR's tokenizer is VQGAN's autoencoder ([[vqgan/model.py]]) with the quantiser
swapped for the multi-scale one ([[quant.py]]):

$$f = W_q * E(x), \qquad \hat f = \operatorname{MSVQ}(f), \qquad \hat x = G(W_p * \hat f).$$

Three differences from VQGAN's `imagenet_vqgan` configuration, all from the official
`build_vae_var`: the latent has $c = 32$ channels and there is no separate code
length (VQGAN: `z_channels` 256, codes of 256); the base width is 160 instead of 128;
and $W_q$, $W_p$ (`quant_conv`, `post_quant_conv`) are $3 \times 3$ convolutions, not
$1 \times 1$. The encoder and decoder modules themselves are VQGAN's, imported
unchanged: with these settings they have exactly the official parameter counts
(44,107,872 and 64,653,923; the official attention block computes $q, k, v$ with one
$1 \times 1$ convolution of width $3C$ where ours has three of width $C$, the same
number of weights). With the codebook ($4096 \times 32$) and the four $\phi$
convolutions the autoencoder has **108,948,355** parameters, the official count.

The official tokenizer is trained like VQGAN (L1/L2, LPIPS and a PatchGAN critic) on
OpenImages; we train ours with VQGAN's losses and loop ([[experiment.py]]).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from annogen.vqgan.model import Decoder, Encoder

from annogen.var.quant import MultiScaleQuantizer, default_patch_nums


# ## Configurations
#
# `paper` is the official 256px tokenizer. `tiny` is VQGAN's tiny autoencoder
# ([[vqgan/model.py#configurations]]: $32^2$ images, $f = 4$, widths 32 and 64,
# attention at $8 \times 8$) with VAR's $c = 32$, a codebook of $K = 256$ codes and
# the six scales $1, 2, 3, 4, 6, 8$ of an $8 \times 8$ latent: 130 tokens per image.
# `patch_nums=None` picks the schedule for the latent side
# ([[quant.py#scale-schedules]]).
@dataclass
class VAEConfig:
    resolution: int = 32
    in_channels: int = 3
    out_channels: int = 3
    ch: int = 32
    ch_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = (8,)
    z_channels: int = 32
    num_codes: int = 256
    patch_nums: tuple[int, ...] | None = None
    num_phis: int = 4
    q: float = 0.5
    beta: float = 0.25
    dropout: float = 0.0
    restart_every: int = 0

    @property
    def f(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent(self) -> int:
        return self.resolution // self.f

    # The schedule actually used.
    def scales(self) -> tuple[int, ...]:
        return tuple(self.patch_nums) if self.patch_nums else default_patch_nums(self.latent)

    # the tokens that make one image: $\sum_k h_k^2$
    @property
    def num_tokens(self) -> int:
        return sum(p * p for p in self.scales())


PRESETS: dict[str, VAEConfig] = {
    "tiny": VAEConfig(),
    "paper": VAEConfig(resolution=256, ch=160, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                       attn_resolutions=(16,), z_channels=32, num_codes=4096),
}


# ## The model
#
# `forward(x)` returns $(\hat x, \mathcal{L}_{VQ}, \text{tokens})$ like VQGAN's model
# ([[vqgan/model.py#VQGAN]]), so that VQGAN's training step runs it unchanged; the
# tokens are the flat pyramid $(B, L)$, which the codebook-usage metrics read.
class VAE(nn.Module):
    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        c = self.config = config or VAEConfig()
        arch = dict(ch=c.ch, ch_mult=tuple(c.ch_mult), num_res_blocks=c.num_res_blocks,
                    attn_resolutions=tuple(c.attn_resolutions), resolution=c.resolution,
                    z_channels=c.z_channels, dropout=c.dropout)
        self.encoder = Encoder(in_channels=c.in_channels, **arch)
        self.decoder = Decoder(out_channels=c.out_channels, **arch)
        self.quant_conv = nn.Conv2d(c.z_channels, c.z_channels, 3, padding=1)  # [!code hl]
        self.post_quant_conv = nn.Conv2d(c.z_channels, c.z_channels, 3, padding=1)  # [!code hl]
        self.quantize = MultiScaleQuantizer(c.num_codes, c.z_channels, c.scales(),  # [!code hl]
                                            num_phis=c.num_phis, q=c.q, beta=c.beta,
                                            restart_every=c.restart_every)

    # $x \mapsto f$, the features the quantiser reads.
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))

    # $\hat f \mapsto \hat x$
    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(f_hat))

    def forward(self, x: torch.Tensor):
        f_hat, loss, idxs = self.quantize(self.features(x))
        return self.fhat_to_img(f_hat), loss, self.quantize.flatten_idxs(idxs)

    # For the transformer: images to token pyramids, and pyramids (or any prefix of
    # one) back to images.
    @torch.no_grad()
    def img_to_idxs(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.quantize.f_to_idxs(self.features(x))

    def idxs_to_img(self, idxs: list[torch.Tensor]) -> torch.Tensor:
        return self.fhat_to_img(self.quantize.idxs_to_fhat(idxs))

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


def build_vae(preset: str = "tiny", in_channels: int | None = None, **overrides) -> VAE:
    r"""A VAR autoencoder from a preset; `in_channels` sets input and output channels."""
    if preset not in PRESETS:
        raise ValueError(f"unknown VAE preset {preset!r}; choose one of {sorted(PRESETS)}")
    if in_channels is not None:
        overrides = {"in_channels": in_channels, "out_channels": in_channels, **overrides}
    return VAE(VAEConfig(**{**asdict(PRESETS[preset]), **overrides}))


# ## Demo
#
# `python src/annogen/var/vae.py`: the tiny autoencoder, untrained, on a batch of
# random images: the shapes of the features, the token pyramid and the reconstruction;
# the paper's tokenizer counted on the `meta` device; and the checked property that
# decoding the encoded pyramid gives the model's own reconstruction.
if __name__ == "__main__":
    torch.manual_seed(0)
    vae = build_vae("tiny").eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        f = vae.features(x)
        x_hat, loss, tokens = vae(x)
        idxs = vae.img_to_idxs(x)
        again = vae.idxs_to_img(idxs)
    print(f"tiny: x {tuple(x.shape)} -> f {tuple(f.shape)} -> pyramid "
          f"{[tuple(r.shape[1:]) for r in idxs]} ({tokens.shape[1]} tokens) -> x_hat {tuple(x_hat.shape)}")
    print(f"tiny: {sum(p.numel() for p in vae.parameters()):,} parameters")
    with torch.device("meta"):
        paper = build_vae("paper")
    print(f"paper: {sum(p.numel() for p in paper.parameters()):,} parameters (official: 108,948,355)")
    assert torch.allclose(again, x_hat, atol=1e-5)
    print("check: decoding the encoded pyramid gives the model's reconstruction")
