"""The Gaussian head avatar of STAvatar: Gaussians bound to FLAME triangles (θ̃), the dual-branch
UV network that predicts their per-frame offsets (soft binding), and the per-frame FLAME parameter
table.

    gaussians.py     GaussianAvatar (triangle binding, parameters, PLY export)
    uv_network.py    UVNetwork: global and local branches in FLAME UV space (method.md §5)
    unet.py          the U-Net encoder blocks and Fourier features the network is built from
    offsets.py       offset activations and the θ* composition (method.md §6)
    flame_table.py   the per-frame FLAME parameter table (fine-tuned per timestep)
"""
