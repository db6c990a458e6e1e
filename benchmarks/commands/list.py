"""``lss-bench list``: the losses, models, metrics and shipped suites this installation knows, with their origin."""

from __future__ import annotations

import argparse

HELP = "list the losses, models, metrics or shipped suites (with plugins and --import modules)"
DESCRIPTION = """\
List what a config or suite can name: registered losses and models (the zoo, installed plugins of the entry-point
groups lss_vlm.losses / lss_vlm.models, and losses or models registered by --import modules), the metric keys a
run's metrics.json can hold (for rank_by, columns, objectives) or the shipped suites (configs/suites/). One line per
item: its name, a one-line description (the first line of its docstring) and where it comes from."""
EXAMPLES = """\
examples:
  lss-bench list losses
  lss-bench list losses --import my_loss.py       # my_loss.py's @register_loss losses appear, source my_loss
  lss-bench list metrics
"""
KINDS = ("losses", "models", "metrics", "suites")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS, metavar="KIND", help=f"what to list: {' | '.join(KINDS)}")


def run(args: argparse.Namespace) -> int:
    rows = {"losses": _losses, "models": _models, "metrics": _metrics, "suites": _suites}[args.kind]()
    width = max(len(name) for name, _, _ in rows)
    for name, description, source in rows:
        print(f"{name:<{width}}  {description or '(no description)'}  [{source}]")
    return 0


def _losses() -> list[tuple[str, str, str]]:
    import losses

    rows = []
    for name in losses.available_losses():
        spec = losses.loss_spec(name)
        origin = losses.loss_origin(name)
        library = f"; wraps {spec['source']}" if spec["source"] and not origin.startswith("plugin") else ""
        rows.append((name, spec["summary"], f"{origin}{library}"))
    return rows


def _models() -> list[tuple[str, str, str]]:
    import inspect

    from lss_vlm.models import MODELS, available_models

    return [
        (name, (inspect.getdoc(MODELS.get(name)) or "").strip().split("\n", 1)[0], MODELS.origin(name))
        for name in available_models()
    ]


def _metrics() -> list[tuple[str, str, str]]:
    from benchmarks.metric_names import describe_metric, metric_names

    return [(name, *describe_metric(name)) for name in sorted(metric_names())]


def _suites() -> list[tuple[str, str, str]]:
    from benchmarks.suite import SUITE_DIR, load_suite

    rows = []
    for path in sorted(SUITE_DIR.glob("*.yaml")):
        suite = load_suite(path)
        first = suite.description.strip().split(". ", 1)[0].rstrip(".")
        n_losses, n_seeds = len(suite.losses), len(suite.seed_list())
        runs = f"{n_losses} loss{'es' * (n_losses != 1)} x {n_seeds} seed{'s' * (n_seeds != 1)}"
        rows.append((path.stem, f"{first} ({runs})", str(path.relative_to(SUITE_DIR.parent.parent))))
    return rows
