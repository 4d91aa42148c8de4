"""Independent checks of the official implementation's quirks (docs/official-e2fgvi.md §3, §9)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from e2fgvi.model.discriminator import Discriminator
from e2fgvi.model.embedding import fold_patches, token_grid, unfold_patches
from e2fgvi.model.feature_propagation import (
    BidirectionalPropagation,
    SecondOrderDeformableAlignment,
)
from e2fgvi.model.focal_transformer import (
    TemporalFocalTransformerBlock,
    WindowAttention,
    overlap_average,
    rolled_key_indices,
)
from e2fgvi.model.generator import interleave_groups
from e2fgvi.model.spynet import SPyNet, flow_warp


def _ranges(*spans: tuple[int, int]) -> list[int]:
    return [i for lo, hi in spans for i in range(lo, hi + 1)]


def test_valid_ind_rolled_is_the_official_index_set():
    expected = _ranges(
        (5, 8), (14, 17), (23, 48), (54, 57), (63, 66), (72, 107), (113, 116), (122, 125),
        (131, 156), (162, 165), (171, 174),
    )  # fmt: skip
    assert rolled_key_indices((5, 9), (2, 4)) == expected
    assert WindowAttention().valid_ind_rolled.tolist() == expected


def test_group_interleave_order():
    x0 = torch.arange(8.0).view(1, 8, 1, 1)
    out = 100 + torch.arange(4.0).view(1, 4, 1, 1)
    got = interleave_groups(x0, out, 2).flatten().tolist()
    assert got == [0, 1, 2, 3, 100, 101, 4, 5, 6, 7, 102, 103]
    assert interleave_groups(x0, out, 1).flatten().tolist() == [*range(8), 100, 101, 102, 103]


def test_unfold_channel_order_is_channel_major_then_7x7():
    x = torch.randn(1, 3, 12, 15)
    patches = unfold_patches(x)  # (1, L, 3*49)
    f_h, f_w = token_grid(12, 15)
    assert patches.shape == (1, f_h * f_w, 147)
    padded = F.pad(x, (3, 3, 3, 3))
    for token, (ly, lx) in [(0, (0, 0)), (f_w + 2, (1, 2)), (f_h * f_w - 1, (f_h - 1, f_w - 1))]:
        for c, ky, kx in [(0, 0, 0), (1, 3, 4), (2, 6, 6)]:
            want = padded[0, c, 3 * ly + ky, 3 * lx + kx]
            assert patches[0, token, c * 49 + ky * 7 + kx] == want


def test_fusion_ffn_normalisation_is_an_overlap_average():
    # Tokens that are the patches of one map fold back, averaged, to that map exactly.
    image = torch.randn(2, 40, 15, 27)
    tokens = unfold_patches(image)
    assert torch.allclose(overlap_average(tokens, (15, 27)), tokens, atol=1e-5)
    # The plain fold is a sum: interior pixels of a 7x7/stride-3 fold are covered up to 9 times.
    counts = fold_patches(torch.ones(1, tokens.shape[1], 49), (15, 27))
    assert counts.max() == 9 and counts.min() >= 1


def test_flow_warp_zero_flow_is_identity_and_integer_flow_shifts():
    x = torch.randn(2, 3, 7, 9)
    assert torch.allclose(flow_warp(x, torch.zeros(2, 2, 7, 9)), x, atol=1e-6)
    flow = torch.zeros(2, 2, 7, 9)
    flow[:, 0] = 2.0  # dx: sample two columns to the right
    flow[:, 1] = -1.0  # dy: sample one row above
    warped = flow_warp(x, flow)
    assert torch.allclose(warped[:, :, 1:, :-2], x[:, :, :-1, 2:], atol=1e-6)
    assert torch.all(warped[:, :, 0] == 0) and torch.all(warped[:, :, :, -2:] == 0)


@torch.no_grad()
def test_spynet_resizes_to_multiples_of_32_and_rescales_u_and_v():
    """Only the finest level adds a constant (1, 2): the result is (1*w/w_up, 2*h/h_up)."""
    spynet = SPyNet()
    for p in spynet.parameters():
        p.zero_()
    spynet.basic_module[5].basic_module[4].conv.bias.copy_(torch.tensor([1.0, 2.0]))
    flow = spynet(torch.rand(2, 3, 60, 108), torch.rand(2, 3, 60, 108))  # padded to 64x128
    assert flow.shape == (2, 2, 60, 108)
    assert torch.allclose(flow[:, 0], torch.full((2, 60, 108), 108 / 128))
    assert torch.allclose(flow[:, 1], torch.full((2, 60, 108), 2 * 60 / 64))


def test_dcn_offsets_follow_the_flipped_flows_per_group_half():
    """Zero learned offsets + constant flows: DCN == 0.5 * conv(bilinear shift) + bias."""
    torch.manual_seed(0)
    c = 16
    dcn = SecondOrderDeformableAlignment(channels=c, deform_groups=16)
    x = torch.randn(1, 2 * c, 10, 14)
    extra = torch.randn(1, 3 * c, 10, 14)
    flow_1 = torch.tensor([1.5, -0.75]).view(1, 2, 1, 1).expand(1, 2, 10, 14)  # (dx, dy)
    flow_2 = torch.tensor([-2.25, 1.25]).view(1, 2, 1, 1).expand(1, 2, 10, 14)
    out = dcn(x, extra, flow_1, flow_2)
    shifted = torch.cat([flow_warp(x[:, :c], flow_1), flow_warp(x[:, c:], flow_2)], dim=1)
    want = 0.5 * F.conv2d(shifted, dcn.weight, padding=1) + dcn.bias.view(1, -1, 1, 1)
    # conv2d zero-pads the warped map while DCN samples the shifted input: compare the interior.
    assert torch.allclose(out[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], atol=1e-5)
    swapped = torch.cat([flow_warp(x[:, :c], flow_2), flow_warp(x[:, c:], flow_1)], dim=1)
    wrong = 0.5 * F.conv2d(swapped, dcn.weight, padding=1) + dcn.bias.view(1, -1, 1, 1)
    assert not torch.allclose(out[..., 1:-1, 1:-1], wrong[..., 1:-1, 1:-1], atol=1e-3)


def test_backward_branch_keeps_the_official_flow_pairing():
    """Backward step i (frame t-1-i) uses flow i-1, not the flow at its own frame."""
    prop = BidirectionalPropagation(channels=8)
    t, h, w = 4, 6, 10
    feats = torch.randn(1, t, 8, h, w)
    # Constant flows whose value names their index: forward k -> k+1, backward 10+k.
    fwd = torch.arange(t - 1, dtype=torch.float32).view(1, t - 1, 1, 1, 1).expand(1, t - 1, 2, h, w)
    bwd = 10 + fwd
    seen: dict[str, list[float]] = {"backward_": [], "forward_": []}
    for name in seen:
        prop.deform_align[name].register_forward_hook(
            lambda m, args, out, name=name: seen[name].append(args[2][0, 0, 0, 0].item())
        )
    prop(feats, fwd, bwd)
    assert seen["backward_"] == [0.0, 1.0, 2.0]  # frames 2, 1, 0 <- flows 0, 1, 2
    assert seen["forward_"] == [10.0, 11.0, 12.0]  # frames 1, 2, 3 <- flows 0, 1, 2


def _naive_focal_attention(attn: WindowAttention, x: torch.Tensor, pooled: torch.Tensor):
    """Literal per-window attention: own window, rolled (wrapping) neighbours, pooled keys."""
    b, t, h, w, c = x.shape
    (wh, ww), (eh, ew), (fh, fw) = attn.window, attn.expand, attn.focal_window
    heads, hd = attn.num_heads, c // attn.num_heads
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    kp, vp = F.linear(pooled, attn.qkv.weight[c:], attn.qkv.bias[c:]).chunk(2, dim=-1)
    out = torch.zeros(b, t, h, w, c)
    nh, nw = h // wh, w // ww
    for bi in range(b):
        for wi in range(nh):
            for wj in range(nw):
                rows = [wi * wh + r for r in range(wh)]
                cols = [wj * ww + s for s in range(ww)]
                keys, vals, bias = [], [], []
                for ti in range(t):
                    for r in rows:
                        for s in cols:
                            keys.append(k[bi, ti, r, s]), vals.append(v[bi, ti, r, s])
                            bias.append(0.0)
                for ti in range(t):
                    for sh, sw in ((-eh, -ew), (-eh, ew), (eh, -ew), (eh, ew)):
                        for r in range(wh):
                            for s in range(ww):
                                own = (0 <= r - sh < wh) and (0 <= s - sw < ww)
                                if own:
                                    continue  # that key is already one of the window's own
                                y, z = (rows[r] - sh) % h, (cols[s] - sw) % w
                                keys.append(k[bi, ti, y, z]), vals.append(v[bi, ti, y, z])
                                bias.append(0.0)
                for ti in range(t):
                    for di in range(-(fh // 2), fh // 2 + 1):
                        for dj in range(-(fw // 2), fw // 2 + 1):
                            pi, pj = wi + di, wj + dj
                            inside = 0 <= pi < nh and 0 <= pj < nw
                            keys.append(kp[bi, pi, pj, ti] if inside else torch.zeros(c))
                            vals.append(vp[bi, pi, pj, ti] if inside else torch.zeros(c))
                            bias.append(0.0 if inside else -100.0)
                kk, vv, bb = torch.stack(keys), torch.stack(vals), torch.tensor(bias)
                qq = q[bi, :, rows][:, :, cols].reshape(-1, c)
                res = []
                for head in range(heads):
                    sl = slice(head * hd, (head + 1) * hd)
                    logits = qq[:, sl] @ kk[:, sl].T * hd**-0.5 + bb
                    res.append(logits.softmax(-1) @ vv[:, sl])
                res = attn.proj(torch.cat(res, dim=1)).reshape(t, wh, ww, c)
                out[bi, :, wi * wh : (wi + 1) * wh, wj * ww : (wj + 1) * ww] = res
    return out


@torch.no_grad()
def test_window_attention_matches_a_literal_implementation():
    torch.manual_seed(0)
    attn = WindowAttention(dim=16, num_heads=2)
    x = torch.randn(2, 2, 10, 18, 16)
    pooled = torch.randn(2, 2, 2, 2, 16)
    assert torch.allclose(attn(x, pooled), _naive_focal_attention(attn, x, pooled), atol=1e-5)


@torch.no_grad()
def test_window_pooling_is_a_linear_over_window_tokens_in_row_major_order():
    torch.manual_seed(0)
    block = TemporalFocalTransformerBlock(dim=8, num_heads=2)
    pool = block.pool_layers[0]
    torch.nn.init.normal_(pool.weight)
    x = torch.randn(1, 2, 10, 9, 8)
    pooled = block._pool_windows(x)  # (1, 2, 1, 2, 8)
    window = x[0, 1, 5:10, 0:9]  # frame 1, window row 1
    want = torch.einsum("rsc,rs->c", window, pool.weight.view(5, 9)) + pool.bias
    assert torch.allclose(pooled[0, 1, 0, 1], want, atol=1e-5)


def test_spectral_norm_vectors_update_only_in_train_mode():
    torch.manual_seed(0)
    disc = Discriminator()
    clips = torch.randn(1, 3, 3, 32, 32)
    u0 = disc.conv[0].weight_u.clone()
    disc.eval()
    with torch.no_grad():
        disc(clips)
    assert torch.equal(disc.conv[0].weight_u, u0)
    disc.train()
    with torch.no_grad():
        disc(clips)
    assert not torch.equal(disc.conv[0].weight_u, u0)


@pytest.mark.parametrize(
    ("b", "t", "h", "w", "out_hw"), [(1, 3, 240, 432, (4, 7)), (2, 2, 60, 108, (1, 2))]
)
def test_discriminator_output_shape(b, t, h, w, out_hw):
    with torch.no_grad():
        out = Discriminator().eval()(torch.randn(b, t, 3, h, w))
    assert out.shape == (b, t, 128, *out_hw)
