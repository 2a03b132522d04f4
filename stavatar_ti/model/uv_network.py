"""STAvatar's dual-branch UV network (method.md §5): per-frame raw offset map O in FLAME UV space.

Pipeline (method.md §5, one frame t, all maps S×S with S = 256 in the paper):

    Img_r ──U-Net E_i (§5.3)──────────────────────────────► d3        [B,64,S,S]   (constant input)
    UV_pos ──E_f (§5.2)──pos stem Conv3(39→64)+ReLU──────► uv_feat   [B,64,S,S]   (constant input)
    UV_disp(t) ──E_f──disp stem Conv3(39→64)+ReLU─────────► disp_feat [B,64,S,S]
    expr, pose, trans ──Linear+ReLU (§5.4)──broadcast─────► 96 + 16 + 16 channels
    global decoder Φ_g (§5.5) on cat[d3, uv_feat, e_expr, e_pose, e_trans] (256) → g (128)
    local decoder Φ_l (§5.6, one weight set) per region mask m_r → l_r (64 each)
    fusion head F (§5.7) on cat[g, l_1..l_R] → raw offset map O [B,13,S,S]

O is sampled per Gaussian (``stavatar_ti.uv.lookup.lookup_uv``, §4.5), activated with
:func:`stavatar_ti.model.offsets.activate_offsets` (§5.9) and composed with the coarse parameters θ̃ by
:func:`stavatar_ti.model.offsets.compose_final` (§6).

Notes taken from method.md §15:
  * item 7: d3 lives in *image* space and is concatenated channel-wise with UV-space tensors without
    any alignment. This module reproduces that on purpose.
  * item 10: DoubleConv has no BatchNorm (and its convolutions have no bias).

Pose vector convention (method.md §5.1): ``pose = concat[neck(3), jaw(3), eyes(6), global rotation(3)]``
(15 values, axis-angle radians). This is *not* FLAME's own pose order; build it with
:func:`network_pose`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..render.validation import check_float_tensor
from .offsets import OFFSET_CHANNELS
from .unet import FourierEncoder, UNetEncoder, conv1, conv3

__all__ = ["UVNetwork", "network_pose", "LOCAL_TILE"]

#: Side of the UV tiles on which the local branch is evaluated (only tiles that meet a region mask).
LOCAL_TILE = 16
_HALO = 3  # widest window halo the tiled local branch reads (disp stem + two 3x3 convs)


# --------------------------------------------------------------------------------------------------
# pose helper (§5.1)
# --------------------------------------------------------------------------------------------------

def network_pose(rotation: torch.Tensor, neck_pose: torch.Tensor, jaw_pose: torch.Tensor,
                 eyes_pose: torch.Tensor) -> torch.Tensor:
    """Build the network's 15-value pose vector (method.md §5.1).

    Order: ``concat[neck(3), jaw(3), eyes(6), global rotation(3)]`` — this differs from FLAME's
    pose order (global, neck, jaw, eyes).

    Args:
        rotation: [B,3] global rotation, axis-angle (radians).
        neck_pose: [B,3] axis-angle.
        jaw_pose: [B,3] axis-angle.
        eyes_pose: [B,6] left and right eye axis-angles.
    Returns:
        [B,15] tensor with the dtype/device of the inputs.
    Raises:
        ValueError: naming the argument whose shape is wrong or whose batch size differs.
    """
    parts = {"neck_pose": (neck_pose, 3), "jaw_pose": (jaw_pose, 3), "eyes_pose": (eyes_pose, 6),
             "rotation": (rotation, 3)}
    batch = None
    for name, (t, n) in parts.items():
        check_float_tensor(t, name, (None, n))
        if batch is None:
            batch = t.shape[0]
        elif t.shape[0] != batch:
            raise ValueError(f"{name}: batch size {t.shape[0]} differs from the other poses' {batch}")
    return torch.cat([neck_pose, jaw_pose, eyes_pose, rotation], dim=-1)


# --------------------------------------------------------------------------------------------------
# §5.4–§5.8 the dual-branch network
# --------------------------------------------------------------------------------------------------

class UVNetwork(nn.Module):
    """STAvatar dual-branch UV network (method.md §5.3–§5.8): per-frame raw offset map O [B,13,S,S].

    Constructor:
        UVNetwork(uv_size=256, n_expr=100, n_pose=15, n_trans=3, num_regions=4, out_channels=13)

        uv_size: S, the side of every map (the paper: 256). Must be divisible by 8 for the U-Net's
            three pooling levels to line up exactly (other sizes are padded in the decoder).
        n_expr: number of FLAME expression coefficients (100 in the paper; the open head model has
            fewer). Input size of both expression Linears.
        n_pose: pose vector length (15, see :func:`network_pose`).
        n_trans: translation length (3).
        num_regions: R, the number of region masks (4: eye_region, nose, lips, forehead).
        out_channels: channels of O (13, method.md §5.9).

    Parameters at S = 256, n_expr = 100 (S does not change the count): 5,874,189 in all;
    U-Net 4,258,656; the rest 1,615,533 (stems 45,056; embeddings 10,016; global decoder 885,120;
    local decoder 158,208; fusion head 517,133).

    Buffers (persistent, saved in ``state_dict`` as method.md §5.11 asks; set with :meth:`set_inputs`):
        ref_image    [1,3,S,S]  Img_r, identity reference image in [0,1] (resized with antialiasing).
        uv_pos       [1,3,S,S]  UV_pos (§4.2).
        region_masks [1,R,S,S]  eye_region, nose, lips, forehead masks (values in [0,1]).

    Initialisation (method.md §5.8): every Conv2d/Linear weight ~ N(0, 0.01²), every bias 0, so the
    initial O ≈ 0 and the activated offsets are ≈ identity.

    Evaluation (same values as the literal dense network, :meth:`forward_dense`, up to float
    rounding; method.md is followed exactly, only the order of the work changes):
      * the broadcast condition channels (e_expr, e_pose, e_trans; the local e_loc) are spatially
        constant, so their part of the first 3×3 convolution is one 3×3 kernel per output channel,
        Σ_c e_c·W[:, c], applied to the image's indicator (zero padding included) instead of a
        convolution over 128 (64) materialised constant channels;
      * the local branch's output is zero outside each region mask (§5.6), so the local decoder, the
        disp stem feeding it and the fusion head's first convolution of the local channels run only
        on the LOCAL_TILE×LOCAL_TILE tiles that meet a mask (with the halo their receptive fields
        need), and the tiles' contributions are added back with ``F.fold``. The tile layout is
        computed once per mask content (one host sync) and cached.
    At S = 256 with the open head's masks this removes about 45 % of the network's multiply-adds.

    Caching: d3 = E_i(Img_r) and uv_feat = stem(E_f(UV_pos)) depend only on the weights and the
    constant buffers. In training mode they are recomputed on every call (gradients reach the U-Net
    and the pos stem). In eval mode the first call computes them and stores *detached* copies; later
    eval calls reuse them (method.md §5.3 "forward_once"). The cache is dropped by :meth:`clear_cache`,
    :meth:`set_inputs`, ``train()`` / ``eval()``, ``load_state_dict`` and on a device/dtype change.
    Call :meth:`clear_cache` yourself if you modify weights while staying in eval mode.
    """

    def __init__(self, uv_size: int = 256, n_expr: int = 100, n_pose: int = 15, n_trans: int = 3,
                 num_regions: int = 4, out_channels: int = OFFSET_CHANNELS):
        super().__init__()
        for name, v in (("uv_size", uv_size), ("n_expr", n_expr), ("n_pose", n_pose), ("n_trans", n_trans),
                        ("num_regions", num_regions), ("out_channels", out_channels)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        self.uv_size, self.n_expr, self.n_pose, self.n_trans = uv_size, n_expr, n_pose, n_trans
        self.num_regions, self.out_channels = num_regions, out_channels
        S, R = uv_size, num_regions

        self.fourier = FourierEncoder()
        fch = self.fourier.out_channels(3)  # 39

        # §5.3 image encoder
        self.image_encoder = UNetEncoder(3)
        # §5.2 stems
        self.pos_stem = nn.Sequential(conv3(fch, 64), nn.ReLU(inplace=True))
        self.disp_stem = nn.Sequential(conv3(fch, 64), nn.ReLU(inplace=True))
        # §5.4 condition embeddings
        self.expr_embed = nn.Linear(n_expr, 96)
        self.pose_embed = nn.Linear(n_pose, 16)
        self.trans_embed = nn.Linear(n_trans, 16)
        # §5.5 global decoder
        self.global_decoder = nn.Sequential(
            conv3(64 + 64 + 96 + 16 + 16, 256), nn.ReLU(inplace=True),
            conv3(256, 128), nn.ReLU(inplace=True),
        )
        # §5.6 local decoder (one weight set shared by all regions)
        self.local_expr_embed = nn.Linear(n_expr, 64)
        self.local_decoder = nn.Sequential(
            conv3(64 + 64 + 64, 64), nn.ReLU(inplace=True),
            conv3(64, 64), nn.ReLU(inplace=True),
            conv1(64, 64),
        )
        # §5.7 fusion head
        self.fusion = nn.Sequential(
            conv3(128 + 64 * R, 128), nn.ReLU(inplace=True),
            conv3(128, 64), nn.ReLU(inplace=True),
            conv1(64, out_channels),
        )

        self.register_buffer("ref_image", torch.zeros(1, 3, S, S))
        self.register_buffer("uv_pos", torch.zeros(1, 3, S, S))
        self.register_buffer("region_masks", torch.zeros(1, R, S, S))
        self._inputs_set = False
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._tiles: tuple | None = None  # (mask key, tile plan) of the tiled local branch
        self.reset_parameters()

    # ---- initialisation -------------------------------------------------------------------------

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.01) -> None:
        """Method.md §5.8: every Conv2d and Linear weight ~ N(0, std²) (std = 0.01), biases 0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.clear_cache()

    # ---- constant inputs ------------------------------------------------------------------------

    @torch.no_grad()
    def set_inputs(self, ref_image: torch.Tensor, uv_pos: torch.Tensor, region_masks: torch.Tensor) -> None:
        """Set the constant buffers Img_r, UV_pos and the region masks (method.md §5.1).

        Args:
            ref_image: [3,H,W] or [1,3,H,W] float RGB in [0,1], any H, W; resized to S×S with
                bilinear interpolation and antialiasing (``F.interpolate(..., antialias=True)``) if
                its size is not S×S.
            uv_pos: [3,S,S] or [1,3,S,S] float UV position map (§4.2).
            region_masks: [R,S,S] or [1,R,S,S] float masks in [0,1], ordered eye_region, nose, lips,
                forehead (R = num_regions).
        The values are copied into the buffers (their dtype/device is kept). Clears the cache.

        Raises:
            ValueError: naming the argument, for a wrong shape, a non-float dtype, non-finite values,
                or values outside [0,1] (ref_image, region_masks).
        """
        S, R = self.uv_size, self.num_regions

        def batched(x, name, c, size):
            if isinstance(x, torch.Tensor) and x.ndim == 3:
                x = x[None]
            check_float_tensor(x, name, (1, c, size, size) if size is not None else (1, c, None, None))
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"{name}: contains NaN or inf")
            return x

        ref = batched(ref_image, "ref_image", 3, None)
        pos = batched(uv_pos, "uv_pos", 3, S)
        masks = batched(region_masks, "region_masks", R, S)
        for name, t in (("ref_image", ref), ("region_masks", masks)):
            if bool((t < 0).any()) or bool((t > 1).any()):
                raise ValueError(f"{name}: values must lie in [0, 1]")
        ref = ref.to(device=self.ref_image.device, dtype=self.ref_image.dtype)
        if ref.shape[-2:] != (S, S):
            ref = F.interpolate(ref, size=(S, S), mode="bilinear", align_corners=False, antialias=True)
            ref = ref.clamp(0.0, 1.0)
        self.ref_image.copy_(ref)
        self.uv_pos.copy_(pos)
        self.region_masks.copy_(masks)
        self._inputs_set = True
        self.clear_cache()

    # ---- cache ----------------------------------------------------------------------------------

    def clear_cache(self) -> None:
        """Drop the cached (d3, uv_feat); the next forward recomputes them."""
        self._cache = None

    def train(self, mode: bool = True):
        self.clear_cache()  # weights may change while training; start every eval phase afresh
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.clear_cache()  # .to(), .cuda(), .double(), ...
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "ref_image" in state_dict and prefix + "uv_pos" in state_dict:
            self._inputs_set = True
        self.clear_cache()

    def constant_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(d3 [1,64,S,S], uv_feat [1,64,S,S]) from the constant buffers (method.md §5.2–§5.3).

        Recomputed (with autograd) in training mode or when no cache exists; in eval mode the result
        is cached detached and reused until the cache is cleared.
        Raises:
            RuntimeError: if :meth:`set_inputs` was never called (and no state dict was loaded).
        """
        if not self._inputs_set:
            raise RuntimeError("UVNetwork: call set_inputs(ref_image, uv_pos, region_masks) before forward")
        if not self.training and self._cache is not None:
            d3, uv_feat = self._cache
            if d3.device == self.ref_image.device and d3.dtype == self.ref_image.dtype:
                return d3, uv_feat
        d3 = self.image_encoder(self.ref_image)
        uv_feat = self.pos_stem(self.fourier(self.uv_pos))
        if not self.training:
            self._cache = (d3.detach(), uv_feat.detach())
        return d3, uv_feat

    # ---- forward --------------------------------------------------------------------------------

    def forward(self, uv_disp: torch.Tensor, expr: torch.Tensor, pose: torch.Tensor,
                trans: torch.Tensor) -> torch.Tensor:
        """Predict the raw offset map O (method.md §5.5–§5.7).

        Args:
            uv_disp: [B,3,S,S] UV displacement map of frame t (§4.3).
            expr: [B,n_expr] FLAME expression coefficients.
            pose: [B,n_pose] = concat[neck(3), jaw(3), eyes(6), global rotation(3)], axis-angle
                radians (see :func:`network_pose`; not FLAME's order).
            trans: [B,n_trans] FLAME translation (metres).
            All must share the buffers' dtype and device.
        Returns:
            O: [B,out_channels,S,S] raw (pre-activation) offsets; activate per Gaussian after the UV
            lookup with :func:`activate_offsets`.
        Raises:
            ValueError: naming the argument for a wrong shape / batch size / dtype / device.
            RuntimeError: if the constant inputs were never set.
        """
        S = self.uv_size
        check_float_tensor(uv_disp, "uv_disp", (None, 3, S, S))
        B = uv_disp.shape[0]
        check_float_tensor(expr, "expr", (B, self.n_expr))
        check_float_tensor(pose, "pose", (B, self.n_pose))
        check_float_tensor(trans, "trans", (B, self.n_trans))
        ref = self.ref_image
        for name, t in (("uv_disp", uv_disp), ("expr", expr), ("pose", pose), ("trans", trans)):
            if t.device != ref.device or t.dtype != ref.dtype:
                raise ValueError(f"{name}: expected {ref.dtype} on {ref.device} like the network, "
                                 f"got {t.dtype} on {t.device}")

        d3, uv_feat = self.constant_features()  # [1,64,S,S] each

        # §5.4 + §5.5 global branch. d3 and uv_feat are the same for every batch element, so their
        # part of the first convolution runs once; the broadcast embeddings enter as a per-sample
        # 3x3 kernel applied to the image indicator (class docstring).
        e = torch.cat([F.relu(self.expr_embed(expr)), F.relu(self.pose_embed(pose)),
                       F.relu(self.trans_embed(trans))], 1)  # [B,128]
        c1 = self.global_decoder[0]
        g = F.conv2d(torch.cat([d3, uv_feat], 1), c1.weight[:, :128], c1.bias, padding=1)
        g = F.relu(g + _constant_channels_full_map(e, c1.weight[:, 128:], S))
        g = self.global_decoder[3](self.global_decoder[2](g))  # [B,128,S,S]

        # §5.6 local branch and §5.7 fusion head: the fusion's first convolution is linear, so its
        # local channels (zero outside the masks) are added tile by tile
        f1 = self.fusion[0]
        y = F.conv2d(g, f1.weight[:, :128], f1.bias, padding=1)
        local = self._local_fusion_tiled(uv_disp, d3, expr, f1.weight[:, 128:])
        if local is not None:
            y = y + local
        return self.fusion[4](self.fusion[3](self.fusion[2](F.relu(y))))

    def forward_dense(self, uv_disp: torch.Tensor, expr: torch.Tensor, pose: torch.Tensor,
                      trans: torch.Tensor) -> torch.Tensor:
        """The literal dense evaluation of method.md §5.5–§5.7 (every map at S×S, broadcast channels
        materialised). Same arguments and result as :meth:`forward`, which computes the same values
        with less work (equal up to float rounding); kept as the reference for tests."""
        S, R = self.uv_size, self.num_regions
        B = uv_disp.shape[0]
        d3, uv_feat = self.constant_features()  # [1,64,S,S] each
        d3 = d3.expand(B, -1, -1, -1)
        uv_feat = uv_feat.expand(B, -1, -1, -1)
        disp_feat = self.disp_stem(self.fourier(uv_disp))  # [B,64,S,S]

        def bcast(v: torch.Tensor) -> torch.Tensor:
            return v[:, :, None, None].expand(-1, -1, S, S)

        # §5.4 + §5.5 global branch
        e_expr = F.relu(self.expr_embed(expr))
        e_pose = F.relu(self.pose_embed(pose))
        e_trans = F.relu(self.trans_embed(trans))
        g = self.global_decoder(torch.cat([d3, uv_feat, bcast(e_expr), bcast(e_pose), bcast(e_trans)], 1))

        # §5.6 local branch: all regions in one batched pass through the shared weights
        local = self.local_branch(disp_feat, d3, expr)  # [B,R,64,S,S]

        # §5.7 fusion head
        return self.fusion(torch.cat([g, local.reshape(B, R * 64, S, S)], 1))

    def local_branch(self, disp_feat: torch.Tensor, d3: torch.Tensor, expr: torch.Tensor) -> torch.Tensor:
        """Local decoder Φ_l for every region (method.md §5.6), shared weights.

        For mask m_r: x = cat[disp_feat ⊙ m, d3 ⊙ m, ReLU(Linear(expr)) (unmasked)] (192 ch) →
        Conv3+ReLU, Conv3+ReLU, Conv1 → output ⊙ m_r.

        Args: disp_feat [B,64,S,S], d3 [B,64,S,S], expr [B,n_expr].
        Returns: [B,R,64,S,S]; entry r is exactly zero wherever region_masks[r] == 0.
        """
        B, _, S, _ = disp_feat.shape
        R = self.num_regions
        m = self.region_masks.to(disp_feat.dtype)[0][None, :, None]  # [1,R,1,S,S]
        e_loc = F.relu(self.local_expr_embed(expr))[:, None, :, None, None].expand(B, R, -1, S, S)
        x = torch.cat([disp_feat[:, None] * m, d3[:, None] * m, e_loc], dim=2)  # [B,R,192,S,S]
        y = self.local_decoder(x.reshape(B * R, 192, S, S)).reshape(B, R, 64, S, S)
        return y * m

    # ---- tiled local branch ---------------------------------------------------------------------

    def _tile_plan(self) -> dict:
        """Tiles of each region mask and the constant windows the tiled local branch uses.

        Maps are placed on a canvas zero-padded by _HALO texels (and up to a multiple of LOCAL_TILE);
        for region r and each tile meeting its mask: flat canvas indices of the tile's windows with
        halo 3 (uv_disp for the disp stem) and 2 (d3 for the local decoder), and the mask / image
        indicator on those windows. Cached by the mask buffer's identity and version.
        """
        m = self.region_masks
        try:
            version = m._version
        except RuntimeError:  # inference tensors keep no version counter: rebuild every call
            version = None
        key = (version, m.data_ptr(), m.device, m.dtype)
        if version is not None and self._tiles is not None and self._tiles[0] == key:
            return self._tiles[1]
        S, T, H = self.uv_size, LOCAL_TILE, _HALO
        nt = -(-S // T)
        Sp = nt * T
        W = Sp + 2 * H
        pad = (H, H + Sp - S, H, H + Sp - S)
        with torch.no_grad():
            canvas = F.pad(m[0], pad)  # [R,W,W]
            inside = F.pad(torch.ones(1, S, S, dtype=m.dtype, device=m.device), pad)[0].reshape(-1)
            core = (canvas[:, H:H + Sp, H:H + Sp] != 0).to(m.dtype)
            active = F.max_pool2d(core[None], T)[0] > 0  # [R,nt,nt]: tiles meeting each mask
            regions = []  # regions with an empty mask contribute nothing and are left out
            for r in range(self.num_regions):
                tiles = torch.nonzero(active[r].flatten()).squeeze(1)  # host sync, once per mask content
                if tiles.numel() == 0:
                    continue
                n = tiles.numel()
                top, left = (tiles // nt) * T + H, (tiles % nt) * T + H

                def window(h: int) -> torch.Tensor:
                    a = torch.arange(-h, T + h, device=m.device)
                    rows = top[:, None, None] + a[None, :, None]
                    return (rows * W + left[:, None, None] + a[None, None, :]).reshape(-1)  # [n·w·w]

                flat = canvas[r].reshape(-1)
                w3, w2, w1, w0 = window(3), window(2), window(1), window(0)
                regions.append({
                    "r": r, "n": n, "tiles": tiles, "idx3": w3, "idx2": w2,
                    "inside3": inside[w3].view(n, 1, T + 6, T + 6), "inside2": inside[w2].view(n, 1, T + 4, T + 4),
                    "inside1": inside[w1].view(n, 1, T + 2, T + 2),
                    "mask2": flat[w2].view(n, 1, T + 4, T + 4), "mask0": flat[w0].view(n, 1, T, T),
                })
        plan = {"nt": nt, "Sp": Sp, "pad": pad, "regions": regions}
        self._tiles = (key, plan)
        return plan

    def _local_fusion_tiled(self, uv_disp: torch.Tensor, d3: torch.Tensor, expr: torch.Tensor,
                            fusion_w: torch.Tensor) -> torch.Tensor | None:
        """Σ_r conv3(local_r, fusion_w[:, 64r:64(r+1)]) (zero padding, no bias) [B,128,S,S], with
        local_r the output of :meth:`local_branch` for region r, evaluated on the mask tiles only.
        None when every mask is empty.

        Per tile (side T) of region r: the disp stem on the (T+6)² window of E_f(uv_disp) (zeroed
        outside the image, as the dense convolution's padding), the local decoder as valid
        convolutions on the (T+4)² window of [disp_feat ⊙ m, d3 ⊙ m, e_loc] (its first layer's output
        zeroed outside the image, as the dense second layer's padding), ⊙ m on the T² tile, then the
        fusion convolution of that tile alone on its (T+2)² footprint; ``F.fold`` sums the footprints.
        Exact: every value read lies within the halo of the tile it serves.
        """
        plan = self._tile_plan()
        if not plan["regions"]:
            return None
        S, T = self.uv_size, LOCAL_TILE
        B = uv_disp.shape[0]
        pad = plan["pad"]
        e_loc = F.relu(self.local_expr_embed(expr))  # [B,64]
        l1, l2, l3 = self.local_decoder[0], self.local_decoder[2], self.local_decoder[4]
        stem = self.disp_stem[0]
        disp_canvas = F.pad(uv_disp, pad).flatten(2)  # [B,3,W*W]
        d3_canvas = F.pad(d3, pad).flatten(2)  # [1,64,W*W]
        contributions, tiles = [], []
        for reg in plan["regions"]:
            n, r = reg["n"], reg["r"]

            def per_sample(x: torch.Tensor) -> torch.Tensor:  # [n,...] constant window -> [B*n,...]
                return x if B == 1 else x.repeat(B, 1, 1, 1)

            ud = _windows(disp_canvas, reg["idx3"], n, T + 6)  # [B*n,3,T+6,T+6]
            disp_feat = F.relu(F.conv2d(self.fourier(ud) * per_sample(reg["inside3"]), stem.weight, stem.bias))
            d3w = _windows(d3_canvas, reg["idx2"], n, T + 4)  # [n,64,T+4,T+4]
            m2 = reg["mask2"]
            x = torch.cat([disp_feat * per_sample(m2), per_sample(d3w * m2)], 1)  # [B*n,128,T+4,T+4]
            h = F.conv2d(x, l1.weight[:, :128], l1.bias) \
                + _constant_channels_conv(e_loc, l1.weight[:, 128:], reg["inside2"]).transpose(0, 1).reshape(
                    B * n, -1, T + 2, T + 2)
            h = F.relu(h) * per_sample(reg["inside1"])
            h = F.relu(F.conv2d(h, l2.weight, l2.bias))  # [B*n,64,T,T]
            local = F.conv2d(h, l3.weight, l3.bias) * per_sample(reg["mask0"])
            c = F.conv2d(F.pad(local, (1, 1, 1, 1)), fusion_w[:, 64 * r:64 * (r + 1)], None, padding=1)
            contributions.append(c.view(B, n, -1))  # [B,n,128*(T+2)^2]
            tiles.append(reg["tiles"])
        nt, Sp, k = plan["nt"], plan["Sp"], T + 2
        # fold's layout [B, C·k·k, tiles]: index_add into the tile axis directly (no transposed copy
        # of the whole block buffer); tiles met by several regions add up
        values = torch.cat(contributions, 1).transpose(1, 2)  # [B,C·k·k,N]
        blocks = torch.zeros(B, values.shape[1], nt * nt, dtype=d3.dtype, device=d3.device)
        blocks = blocks.index_add(2, torch.cat(tiles), values)
        out = F.fold(blocks, (Sp, Sp), kernel_size=k, stride=T, padding=1)
        return out[:, :, :S, :S]

    def extra_repr(self) -> str:
        return (f"uv_size={self.uv_size}, n_expr={self.n_expr}, n_pose={self.n_pose}, n_trans={self.n_trans}, "
                f"num_regions={self.num_regions}, out_channels={self.out_channels}")


def _constant_channels_conv(consts: torch.Tensor, weight: torch.Tensor, indicator: torch.Tensor,
                            padding: int = 0) -> torch.Tensor:
    """conv2d(consts[b,c] · indicator, weight) for spatially constant channels, without materialising them.

    Args: consts [B,C]; weight [O,C,k,k]; indicator [M,1,H,W] (1 where the constant channels exist,
    0 where the dense input would be zero, e.g. outside the image).
    Returns: [M,B,O,H',W'], H' = H + 2·padding − k + 1 (one kernel Σ_c consts[b,c]·weight[:,c] per
    sample and output channel).
    """
    B, (O, _, kh, kw) = consts.shape[0], weight.shape
    kernel = torch.einsum("bc,ocyx->boyx", consts, weight).reshape(B * O, 1, kh, kw)
    y = F.conv2d(indicator, kernel, padding=padding)
    return y.view(y.shape[0], B, O, *y.shape[-2:])


def _constant_channels_full_map(consts: torch.Tensor, weight: torch.Tensor, size: int) -> torch.Tensor:
    """conv2d(bcast(consts) over a size×size map, weight, padding=k//2) as [B,O,size,size].

    The broadcast channels are 1 inside the map and 0 in the padding, so the taps that read the
    padding drop out separably by rows and columns:
    out[b,o,i,j] = Σ_{y,x} K[b,o,y,x]·rows[y,i]·cols[x,j], K = Σ_c consts[b,c]·weight[:,c],
    rows[y,i] = 1 when row i+y−k//2 lies inside the map (likewise cols). Equal to
    `_constant_channels_conv(consts, weight, ones(1,1,size,size), padding=k//2)[0]` at a fraction
    of the cost (a 1-input-channel convolution is slow on oneDNN).
    """
    kh, kw = weight.shape[-2:]
    K = torch.einsum("bc,ocyx->boyx", consts, weight)  # [B,O,kh,kw]
    pos = torch.arange(size, device=weight.device)

    def valid(k: int) -> torch.Tensor:  # [k,size]
        src = pos[None, :] + torch.arange(k, device=weight.device)[:, None] - k // 2
        return ((src >= 0) & (src < size)).to(weight.dtype)

    cols = torch.einsum("boyx,xj->boyj", K, valid(kw))  # [B,O,kh,size]
    return torch.einsum("yi,boyj->boij", valid(kh), cols)


def _windows(canvas: torch.Tensor, index: torch.Tensor, n: int, w: int) -> torch.Tensor:
    """Gather n square w×w windows (flat canvas indices `index`, [n·w·w]) of [B,C,P] → [B·n,C,w,w]."""
    B, C = canvas.shape[:2]
    win = canvas.index_select(2, index).view(B, C, n, w, w)
    return win.transpose(1, 2).reshape(B * n, C, w, w)
