"""Temporal focal transformer (E2FGVI §3.3 "content hallucination"; docs/official-e2fgvi.md §3.5).

Each block attends, for every 5x9 token window and all t frames at once, to three key sets:
(a) the window itself, (b) its cyclically rolled neighbourhood (expand 2x4, wrapping around the
borders with no mask, minus the window's own positions), and (c) window-pooled tokens of the whole
frame unfolded 5x9 around the window (zero padding positions get -100 on their logits). It is
followed by FuseFormer's fusion feed-forward network, whose hidden tokens are folded into a
40-channel map, averaged over patch overlaps and unfolded again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from e2fgvi.model.embedding import KERNEL, fold_patches, token_grid, unfold_patches

POOL_PADDING_LOGIT = -100.0  # official value (not -inf): padded pooled keys keep a tiny weight


def rolled_key_indices(window: tuple[int, int], expand: tuple[int, int]) -> list[int]:
    """Positions kept from the 4 rolled windows (tl, tr, bl, br), each flattened row-major.

    From each corner-rolled copy of the window, the tokens that are not the window's own
    tokens are kept (official ``valid_ind_rolled``).
    """
    wh, ww = window
    eh, ew = expand
    corners = (
        lambda r, c: r >= wh - eh or c >= ww - ew,  # rolled by (-eh, -ew): top-left
        lambda r, c: r >= wh - eh or c < ew,  # rolled by (-eh, +ew): top-right
        lambda r, c: r < eh or c >= ww - ew,  # rolled by (+eh, -ew): bottom-left
        lambda r, c: r < eh or c < ew,  # rolled by (+eh, +ew): bottom-right
    )
    indices = []
    for i, keep in enumerate(corners):
        indices += [i * wh * ww + r * ww + c for r in range(wh) for c in range(ww) if keep(r, c)]
    return indices


def overlap_average(tokens: Tensor, output_size: tuple[int, int]) -> Tensor:
    """Fold (n, L, c*49) tokens to a map, divide by the per-pixel patch count, unfold again."""
    f_h, f_w = token_grid(*output_size)
    ones = tokens.new_ones(1, f_h * f_w, KERNEL[0] * KERNEL[1])
    counts = fold_patches(ones, output_size)  # (1, 1, h, w)
    return unfold_patches(fold_patches(tokens, output_size) / counts)


class FusionFeedForward(nn.Module):
    """F3N: Linear(512->1960), overlap-normalised fold/unfold, GELU, Linear(1960->512)."""

    def __init__(self, dim: int = 512, hidden: int = 1960) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Linear(dim, hidden))
        self.conv2 = nn.Sequential(nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, output_size: tuple[int, int]) -> Tensor:
        """x (b, t*L, dim) with L tokens per frame over an ``output_size`` feature map."""
        b, n, _ = x.shape
        f_h, f_w = token_grid(*output_size)
        hidden = self.conv1(x)
        hidden = overlap_average(hidden.reshape(-1, f_h * f_w, hidden.shape[-1]), output_size)
        return self.conv2(hidden.reshape(b, n, -1))


def _split_windows(x: Tensor, window: tuple[int, int], heads: int) -> Tensor:
    """(b, t, h, w, c) -> (b*nW, heads, t, wh*ww, c/heads); windows row-major, tokens (r, c)."""
    b, t, h, w, c = x.shape
    wh, ww = window
    x = x.reshape(b, t, h // wh, wh, w // ww, ww, heads, c // heads)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (b, nh, nw, heads, t, wh, ww, hd)
    return x.reshape(-1, heads, t, wh * ww, c // heads)


def _merge_windows(x: Tensor, b: int, t: int, h: int, w: int, window: tuple[int, int]) -> Tensor:
    """(b*nW, t*wh*ww, c) -> (b, t, h, w, c)."""
    wh, ww = window
    x = x.reshape(b, h // wh, w // ww, t, wh, ww, -1)
    return x.permute(0, 3, 1, 4, 2, 5, 6).reshape(b, t, h, w, -1)


class WindowAttention(nn.Module):
    """Temporal focal window attention over (a) window, (b) rolled and (c) pooled keys."""

    def __init__(
        self,
        dim: int = 512,
        num_heads: int = 4,
        window: tuple[int, int] = (5, 9),
        expand: tuple[int, int] = (2, 4),
        focal_window: tuple[int, int] = (5, 9),
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.expand = expand
        self.focal_window = focal_window
        indices = torch.tensor(rolled_key_indices(window, expand), dtype=torch.int64)
        self.register_buffer("valid_ind_rolled", indices)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, pooled: Tensor) -> Tensor:
        """x (b, t, h, w, c) normalised tokens; pooled (b, nh, nw, t, c) window-pooled tokens."""
        b, t, h, w, c = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)

        # (a) own window: t*45 queries and keys per window, heads split head-major.
        queries = _split_windows(q, self.window, self.num_heads).flatten(2, 3)
        keys = [_split_windows(k, self.window, self.num_heads).flatten(2, 3), self._rolled(k)]
        values = [_split_windows(v, self.window, self.num_heads).flatten(2, 3), self._rolled(v)]

        # (c) pooled: the same qkv projection (k, v rows only) on the pooled tokens.
        k_pool, v_pool = F.linear(pooled, self.qkv.weight[c:], self.qkv.bias[c:]).chunk(2, dim=-1)
        keys.append(self._unfold_pooled(k_pool, b))
        values.append(self._unfold_pooled(v_pool, b))
        keys, values = torch.cat(keys, dim=2), torch.cat(values, dim=2)

        # Additive logit bias: 0 for window and rolled keys, -100 for zero-padded pooled keys.
        pool_bias = self._pooled_padding_bias(pooled.shape[1], pooled.shape[2], t, x)
        own_and_rolled = pool_bias.new_zeros(pool_bias.shape[0], keys.shape[2] - pool_bias.shape[1])
        bias = torch.cat([own_and_rolled, pool_bias], dim=1).repeat(b, 1)[:, None, None, :]

        out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=bias.to(q.dtype))
        out = out.transpose(1, 2).reshape(queries.shape[0], queries.shape[2], c)  # (b*nW, t*45, c)
        return _merge_windows(self.proj(out), b, t, h, w, self.window)

    def _rolled(self, x: Tensor) -> Tensor:
        """(b, t, h, w, c) -> rolled-neighbour keys (b*nW, heads, t*120, hd); borders wrap."""
        eh, ew = self.expand
        shifts = ((-eh, -ew), (-eh, ew), (eh, -ew), (eh, ew))
        rolled = [
            _split_windows(torch.roll(x, s, dims=(2, 3)), self.window, self.num_heads)
            for s in shifts
        ]
        kept = torch.cat(rolled, dim=3).index_select(3, self.valid_ind_rolled)
        return kept.flatten(2, 3)

    def _unfold_pooled(self, x: Tensor, b: int) -> Tensor:
        """Pooled (b, nh, nw, t, c) -> per-window focal keys (b*nW, heads, t*fh*fw, hd)."""
        _, nh, nw, t, c = x.shape
        fh, fw = self.focal_window
        x = x.permute(0, 3, 4, 1, 2).reshape(b * t, c, nh, nw)
        cols = F.unfold(x, (fh, fw), padding=(fh // 2, fw // 2))  # (b*t, c*fh*fw, nW)
        cols = cols.reshape(b, t, self.num_heads, c // self.num_heads, fh * fw, nh * nw)
        cols = cols.permute(0, 5, 2, 1, 4, 3)  # (b, nW, heads, t, fh*fw, hd)
        return cols.reshape(b * nh * nw, self.num_heads, t * fh * fw, c // self.num_heads)

    def _pooled_padding_bias(self, nh: int, nw: int, t: int, like: Tensor) -> Tensor:
        """(nW, t*fh*fw): 0 where the unfolded pooled key exists, -100 where it is padding."""
        fh, fw = self.focal_window
        ones = like.new_ones(1, 1, nh, nw, dtype=torch.float32)
        present = F.unfold(ones, (fh, fw), padding=(fh // 2, fw // 2))[0].transpose(0, 1)
        bias = (1.0 - present) * POOL_PADDING_LOGIT  # (nW, fh*fw)
        return bias.repeat(1, t)


class TemporalFocalTransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)); x + F3N(norm2(x)). Tokens (b, t, f_h, f_w, c)."""

    def __init__(
        self,
        dim: int = 512,
        num_heads: int = 4,
        window: tuple[int, int] = (5, 9),
        focal_window: tuple[int, int] = (5, 9),
    ) -> None:
        super().__init__()
        self.window = window
        pool = nn.Linear(window[0] * window[1], 1)
        nn.init.constant_(pool.weight, 1.0 / (window[0] * window[1]))  # a mean, before G's init
        nn.init.zeros_(pool.bias)
        self.pool_layers = nn.ModuleList([pool])
        self.norm1 = nn.LayerNorm(dim)
        expand = (window[0] // 2, window[1] // 2)
        self.attn = WindowAttention(dim, num_heads, window, expand, focal_window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FusionFeedForward(dim)

    def forward(self, x: Tensor, output_size: tuple[int, int]) -> Tensor:
        b, t, h, w, c = x.shape
        y = self.norm1(x)
        x = x + self.attn(y, self._pool_windows(y))
        y = self.norm2(x)
        return x + self.mlp(y.reshape(b, t * h * w, c), output_size).reshape(b, t, h, w, c)

    def _pool_windows(self, x: Tensor) -> Tensor:
        """(b, t, h, w, c) -> (b, nh, nw, t, c): a learned Linear(45 -> 1) over each window."""
        b, t, h, w, c = x.shape
        wh, ww = self.window
        x = x.reshape(b, t, h // wh, wh, w // ww, ww, c).permute(0, 2, 4, 1, 6, 3, 5)
        return self.pool_layers[0](x.reshape(b, h // wh, w // ww, t, c, wh * ww)).squeeze(-1)
