"""The synthetic degradations by name, with what each does (pure Python: the command line lists
them without importing torch; degradations.py implements each)."""

KINDS = {
    "rain": "rain streaks within 25 deg of vertical, 8-55 px long; veil up to 20% at high intensity",
    "haze": "atmospheric scattering, beta 0.4-2.6 over a depth map, airlight 0.7-1.0",
    "snow": "snowflakes of three sizes (sigma 0.5-4 px), some motion-blurred, veil 3-20%",
    "motion_blur": "line kernel, random angle, length 3-31 px",
    "defocus_blur": "disk kernel, radius 1-10 px",
    "lowlight": "gamma 1.5-3.5, scale 0.5-0.1, Poisson-Gaussian sensor noise",
    "noise": "additive Gaussian noise, sigma 2-50 /255, mild channel correlation",
    "jpeg": "JPEG re-encoding, quality 70 down to 8",
}
