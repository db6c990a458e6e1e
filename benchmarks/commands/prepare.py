"""``lss-bench prepare``: convert a real dataset (nifti, rsna2024, spider, mendeley) into a manifest."""

from __future__ import annotations

import argparse

HELP = "convert a real dataset (nifti, rsna2024, spider, mendeley) into a manifest"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from lss_vlm.errors import NotAvailableError

    raise NotAvailableError("'lss-bench prepare' is not available yet in this build (issue #8)")
