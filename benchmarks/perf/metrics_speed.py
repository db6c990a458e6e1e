"""Speed of the metrics against the libraries they wrap (prints ratios; targets: Dice ≤ 1.0, text ≤ 1.2).

1. Dice over ``--images`` label maps (6 classes, ``--size``²): :class:`SegmentationMetrics` (Dice/IoU/area, no
   distances) vs MONAI ``DiceMetric`` on the same label maps (one-hot conversion included, as the trainer holds
   labels), values checked identical where both are defined.
2. Text metrics for ``--reports`` reports: :func:`score_reports` vs bare pycocoevalcap calls on the same input
   (PTB tokenizer on references, then on hypotheses, BLEU, METEOR, ROUGE-L, CIDEr), values checked identical.

Run: ``PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/perf/metrics_speed.py [--skip-text]``. Best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import numpy as np
import torch


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def cpu_seconds() -> float:
    """CPU time of this process plus its finished child processes (the JVMs), less sensitive to machine load."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds incl. children, result) of one call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu, result


def random_label_maps(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    maps = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        for c in range(1, 6):
            r, col = rng.integers(0, size - 8, size=2)
            h, w = rng.integers(4, size // 2, size=2)
            maps[i, r : r + h, col : col + w] = c
    return maps


def dice_benchmark(n_images: int, size: int, repeats: int) -> float:
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    from lss_vlm.metrics.segmentation import SegmentationMetrics

    rng = np.random.default_rng(0)
    pred = torch.from_numpy(random_label_maps(rng, n_images, size))
    target = torch.from_numpy(random_label_maps(rng, n_images, size))
    spacing = torch.ones(n_images, 2)
    ids, views = [str(i) for i in range(n_images)], ["sag_t2"] * n_images

    def ours() -> np.ndarray:
        metrics = SegmentationMetrics(distances=False)
        metrics.update(pred, target, spacing, ids, views)
        metrics.aggregate()
        return metrics.per_case().filter(like="dice/").to_numpy()

    def monai_dice() -> np.ndarray:
        metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
        metric(one_hot(pred[:, None], num_classes=6), one_hot(target[:, None], num_classes=6))
        return metric.aggregate().numpy()

    pred_oh, target_oh = one_hot(pred[:, None], num_classes=6), one_hot(target[:, None], num_classes=6)

    def monai_dice_onehot_given() -> None:
        DiceMetric(include_background=False, reduction="none", ignore_empty=True)(pred_oh, target_oh)

    t_ours, v_ours = best_time(ours, repeats)
    t_monai, v_monai = best_time(monai_dice, repeats)
    t_monai_oh, _ = best_time(monai_dice_onehot_given, repeats)
    defined = ~np.isnan(v_monai)
    max_diff = float(np.abs(v_ours[defined] - v_monai[defined]).max())
    print(f"Dice, {n_images} images x 6 classes x {size}^2 (best of {repeats}):")
    print(f"  ours (labels)            {t_ours * 1e3:8.1f} ms")
    print(f"  MONAI DiceMetric (labels -> one-hot + metric) {t_monai * 1e3:8.1f} ms")
    print(f"  MONAI DiceMetric (one-hot given)               {t_monai_oh * 1e3:8.1f} ms")
    print(f"  values: max |ours - MONAI| = {max_diff:.2e} over {int(defined.sum())} defined (image, class) pairs")
    ratio = t_ours / t_monai
    print(f"  ratio ours / MONAI = {ratio:.3f} (target <= 1.0); vs one-hot given: {t_ours / t_monai_oh:.3f}")
    return ratio


def text_corpus(n_reports: int) -> tuple[dict[str, list[str]], dict[str, str]]:
    from lss_vlm.reports.writer import write_reports

    rng = np.random.default_rng(0)
    references, hypotheses = {}, {}
    for i in range(n_reports):
        grades = [int(g) for g in rng.choice(4, size=5, p=[0.55, 0.25, 0.13, 0.07])]
        areas = [float(a) for a in rng.uniform(30, 170, size=5)]
        references[f"case{i:04d}"] = write_reports(grades, areas, rng=rng, n=3)
        noisy = [g if rng.random() < 0.8 else int(rng.integers(4)) for g in grades]
        hypotheses[f"case{i:04d}"] = write_reports(noisy, None, rng=rng, n=1)[0]
    return references, hypotheses


def text_benchmark(n_reports: int, repeats: int) -> float:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from lss_vlm.metrics.text import score_reports

    references, hypotheses = text_corpus(n_reports)

    def bare() -> dict[str, float]:
        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({k: [{"caption": r} for r in v] for k, v in references.items()})
        res = tokenizer.tokenize({k: [{"caption": h}] for k, h in hypotheses.items()})
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        meteor, _ = Meteor().compute_score(gts, res)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        return {"bleu_4": bleu[3], "meteor": meteor, "rouge_l": rouge, "cider": cider}

    ours = lambda: score_reports(references, hypotheses)  # noqa: E731
    times: dict[str, list[tuple[float, float]]] = {"bare": [], "ours": []}
    values: dict[str, dict[str, float]] = {}
    for i in range(repeats):  # ABBA order so that drifting machine load hits both alike
        for name in ("bare", "ours") if i % 2 == 0 else ("ours", "bare"):
            wall, cpu, values[name] = timed(bare if name == "bare" else ours)
            times[name].append((wall, cpu))
    best = {name: (min(w for w, _ in t), min(c for _, c in t)) for name, t in times.items()}
    diffs = {k: abs(values["ours"][k] - v) for k, v in values["bare"].items()}
    print(f"Text metrics, {n_reports} reports x 3 references (best of {repeats}, ABBA order):")
    print(f"  ours score_reports   wall {best['ours'][0]:8.2f} s   CPU incl. JVMs {best['ours'][1]:8.2f} s")
    print(f"  bare pycocoevalcap   wall {best['bare'][0]:8.2f} s   CPU incl. JVMs {best['bare'][1]:8.2f} s")
    print("  values: " + ", ".join(f"{k} ours={values['ours'][k]:.6f} |diff|={d:.1e}" for k, d in diffs.items()))
    ratio = best["ours"][0] / best["bare"][0]
    print(f"  ratio ours / bare = {ratio:.3f} wall, {best['ours'][1] / best['bare'][1]:.3f} CPU (target <= 1.2)")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--text-repeats", type=int, default=2)
    parser.add_argument("--skip-text", action="store_true", help="skip the Java text benchmark")
    args = parser.parse_args()
    torch.manual_seed(0)
    dice_benchmark(args.images, args.size, args.repeats)
    if not args.skip_text:
        text_benchmark(args.reports, args.text_repeats)


if __name__ == "__main__":
    main()
