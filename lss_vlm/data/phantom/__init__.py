"""The embedded multi-view lumbar-spinal-stenosis phantom (DESIGN.md §4).

``synthesize(out_dir, n_cases, size, seed, shift)`` writes NIfTI views and masks plus ``manifest.csv``;
``phantom_stats(manifest)`` measures how hard it is (class shares, grade prevalence, sac areas per grade);
``save_montage(manifest, png)`` renders a few cases. Options: :class:`PhantomConfig`; shifts: :data:`SHIFT_PRESETS`.
"""

from .config import SHIFT_PRESETS, PhantomConfig, resolve_config
from .generate import synthesize
from .montage import save_montage
from .stats import format_stats, phantom_stats

__all__ = [
    "SHIFT_PRESETS",
    "PhantomConfig",
    "format_stats",
    "phantom_stats",
    "resolve_config",
    "save_montage",
    "synthesize",
]
