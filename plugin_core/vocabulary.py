"""The words the settings choose from, each tuple written once: low in the house (plain Python, no
imports), so that images.py, colorfix.py and models/ check a choice without reaching up into the
settings that offer it (restore/settings.py, training/config.py), and the nodes list the same
choices (through the packages that export them)."""

# A restore (restore/settings.py: RestoreSettings)
RESIZE_MODES = ("min", "exact")  # images.working_size: only raise small images, or always scale the short side
OUTPUT_SIZES = ("original", "processed")  # written at the input's size, or at the working size
COLOR_FIXES = ("none", "wavelet", "adain")  # colorfix.py implements them
TILE_PROMPTS = ("tile", "global")  # Fp from each tile's pixels, or one from the whole image
COMPOSE_MODES = ("chain", "joint")  # several plugins: one after another (the reference), or in one pass
JOINT_CONTEXTS = ("attention", "tokens")  # models/compose.py: how the UNet reads the plugins' prompts in one pass

# A Task-Plugin (models/config.py: PluginInfo) and its training (training/config.py: TrainConfig)
START_MODES = ("input", "noise")  # sampling starts from the noised input latent, or from pure noise

# Training (training/config.py: TrainConfig)
MIXED_PRECISION = ("no", "fp16", "bf16")  # autocast, fp32 master weights
REPORT_TO = ("none", "tensorboard", "wandb")  # Accelerate's trackers

# The base (base/sources.py, base/clip_file.py)
CLIP_VISION_TYPES = ("clip_vision_model", "clip")  # the model_type of a transformers CLIP (vision) config
