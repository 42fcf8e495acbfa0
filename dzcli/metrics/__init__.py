"""Image quality metrics (PSNR, SSIM, LPIPS) and the evaluation regions."""
