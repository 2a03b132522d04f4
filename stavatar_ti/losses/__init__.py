"""Image losses, evaluation metrics and the offline LPIPS.

    photometric.py   L1, D-SSIM, LPIPS loss terms and the fused perceptual error map (method.md §8, §10.4)
    metrics.py       PSNR, SSIM, LPIPS, L1 metrics (method.md §13)
    lpips.py         pure-torch LPIPS (AlexNet / VGG16) with sha256-checked offline weights
"""
