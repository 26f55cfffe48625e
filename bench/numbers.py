"""``python -m bench.numbers``: the project's measured figures as one Markdown table, read from the results files.

Every figure the README and docs/ quote lives in a results file written by the command that
measured it; this table is generated from those files, so a figure cannot appear with two values.
README.md and docs/numbers.md hold it between the lines :data:`BEGIN` and :data:`END`;
``python -m bench.numbers --write README.md docs/numbers.md`` rewrites those regions only, and
tests/test_numbers.py fails when a file and the results disagree.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- numbers:begin (python -m bench.numbers --write README.md docs/numbers.md) -->"
END = "<!-- numbers:end -->"


def read_results(path: str | Path) -> dict:
    """A results file: JSON, or the benchmarks' printout (one JSON object, then a summary line)."""
    text = (ROOT / path).read_text()
    return json.JSONDecoder().raw_decode(text.lstrip())[0]


@dataclass(frozen=True)
class Figure:
    what: str  # what was measured, on what
    source: str  # the results file, relative to the checkout
    command: str  # the command that wrote it
    value: Callable[[dict], str]  # the figure, from the file's contents


def _toy_row(r: dict, kind: str) -> dict:
    return r["rows"][f"shipped zeroft-toy (26,000 steps), {kind}"]


def _personalisation(r: dict) -> str:
    """The eval report keeps zeroft's encoding time and the ratio in its notes ("personalisation 5.5 ms/object")."""
    tuned = next(row for name, row in r["rows"].items() if name.startswith("per-object fine-tuning"))
    encode_ms = float(re.search(r"personalisation ([0-9.]+) ms", r["rows"]["zeroft"]["notes"]).group(1))
    ratio = re.search(r"([0-9,]+)x zeroft's time", tuned["notes"]).group(1)  # from the unrounded times
    return (f"{encode_ms:g} ms vs {tuned['seconds_per_object']:g} s per object fine-tuned for "
            f"{tuned['fine_tuning_steps']} steps: {ratio}×")


def _peak(r: dict, case: str) -> float:
    return r["cases"][case]["peak_gib"]


FIGURES = (
    Figure("toy world, 288 pairs of 12 held-out identities, the shipped model at its guidance weights, guided at every "
           "step, masked references",
           "toyworld/results/toyworld-recipes/shipped.json", "python -m toyworld copying (its step 0)",
           lambda r: (f"identity {_toy_row(r, 'masked')['identity']:.3f} ± {_toy_row(r, 'masked')['identity_se']:.3f} "
                      f"({_toy_row(r, 'masked')['identity_of_ceiling']:.2f} of the generator's ceiling), text "
                      f"{_toy_row(r, 'masked')['text']:.3f}, background copied on conflicts "
                      f"{_toy_row(r, 'masked')['background_copy']:.3f} (chance 0.25)")),
    Figure("personalisation: mask and encode one photo vs per-object fine-tuning (toy world)",
           "toyworld/results/toyworld/toyworld_eval.json", "python -m toyworld eval", lambda r: _personalisation(r)),
    Figure("zeroft with equal weights vs diffusers' StableDiffusionPipeline + load_ip_adapter (same weights, 10 steps, "
           "64 px, CPU)", "bench/results/pipeline_overhead.txt", "python -m bench.pipeline_overhead",
           lambda r: (f"tiny UNet {r['tiny']['ratio_equal_weights']:.3f}×, medium UNet ({r['medium']['unet_parameters_M']:.0f}M) "
                      f"{r['medium']['ratio_equal_weights']:.3f}×; largest pixel difference "
                      f"{max(r['tiny']['max_pixel_difference_equal_weights'], r['medium']['max_pixel_difference_equal_weights']):g}")),
    Figure("three-branch guidance (w_text ≠ w_obj) vs the same baseline", "bench/results/pipeline_overhead.txt",
           "python -m bench.pipeline_overhead",
           lambda r: f"tiny {r['tiny']['ratio_three_branches']:.3f}×, medium {r['medium']['ratio_three_branches']:.3f}×"),
    Figure("guidance on the noise interval (0.4, 2.5] vs the same baseline (three branches on half the steps)",
           "bench/results/pipeline_overhead.txt", "python -m bench.pipeline_overhead",
           lambda r: (f"tiny {r['tiny']['intervals']['0.4-2.5']['ratio']:.3f}×, medium "
                      f"{r['medium']['intervals']['0.4-2.5']['ratio']:.3f}× (paper's SD-XL interval (0.28, 5.42]: medium "
                      f"{r['medium']['intervals']['0.28-5.42']['ratio']:.3f}×)")),
    Figure("toy world, the same pairs, the shipped default: guidance on (0.4, 2.5] (half the sampler's steps)",
           "toyworld/results/toyworld-interval/interval_eval.json", "python -m toyworld interval",
           lambda r: (f"identity {r['rows']['narrow']['identity']:.3f} ± {r['rows']['narrow']['identity_se']:.3f}, text "
                      f"{r['rows']['narrow']['text']:.3f} (every step: {r['rows']['off']['identity']:.3f}, "
                      f"{r['rows']['off']['text']:.3f}); {r['rows']['narrow']['seconds_per_image']:.3f} vs "
                      f"{r['rows']['off']['seconds_per_image']:.3f} s/image")),
    Figure("int8 weight-only (torchao) on the embedded model, CPU", "bench/results/quantization.txt",
           "python -m bench.quantization",
           lambda r: (f"UNet Linear weights {r['modes']['none']['unet_linear_weight_bytes'] / 1e6:.1f} MB → "
                      f"{r['modes']['int8']['unet_linear_weight_bytes'] / 1e6:.1f} MB; "
                      f"{r['modes']['int8']['seconds_per_image']:.3f} vs {r['modes']['none']['seconds_per_image']:.3f} s/image")),
    Figure("full size on a 2-core CPU, random weights, peak memory of loading and one image, none vs int8",
           "bench/results/full_size.json", "python -m bench.full_size",
           lambda r: (f"SD1.5 fp32 512 px {_peak(r, 'sd15/float32/zeroft/none'):.2f} vs "
                      f"{_peak(r, 'sd15/float32/zeroft/int8'):.2f} GiB; SDXL bf16 1024 px "
                      f"{_peak(r, 'sdxl/bfloat16/zeroft/none'):.2f} vs {_peak(r, 'sdxl/bfloat16/zeroft/int8'):.2f} GiB")),
    Figure("FLUX.1-dev + XLabs adapter at full size on a 2-core CPU, random weights, int8 (bf16 does not fit: 33 GB "
           "of weights)", "bench/results/full_size.json", "python -m bench.full_size --backbone flux --loaders zeroft "
           "--quantizations int8",
           lambda r: (lambda c: f"peak {c['peak_gib']:.2f} GiB, load {c['load_s']:.0f} s; s per transformer step, "
                      f"1 / 3 branches: {c['sizes']['256']['branches_1_s_per_step']:.0f} / "
                      f"{c['sizes']['256']['branches_3_s_per_step']:.0f} at 256 px, "
                      f"{c['sizes']['512']['branches_1_s_per_step']:.0f} / "
                      f"{c['sizes']['512']['branches_3_s_per_step']:.0f} at 512 px")(r["cases"]["flux/bfloat16/zeroft/int8"])),
)


def numbers_table(figures=FIGURES) -> str:
    """The Markdown table: what, figure, results file (linked from the checkout's root), command."""
    rows = ["| what | measured | results file | command |", "| --- | --- | --- | --- |"]
    for figure in figures:
        rows.append(f"| {figure.what} | {figure.value(read_results(figure.source))} | "
                    f"[`{figure.source}`]({figure.source}) | `{figure.command}` |")
    return "\n".join(rows) + "\n"


def with_links_from(table: str, document: Path) -> str:
    """``table`` with its results-file links made relative to ``document``'s folder (docs/ pages link ../)."""
    depth = len(document.resolve().relative_to(ROOT).parts) - 1
    return table.replace("](", "](" + "../" * depth) if depth else table


def replace_region(text: str, table: str) -> str:
    """``text`` with the part between BEGIN and END replaced by ``table``."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"no {BEGIN!r} ... {END!r} region")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.numbers", description=__doc__.splitlines()[0])
    parser.add_argument("--write", nargs="*", default=None, metavar="FILE",
                        help="rewrite the numbers region of these files instead of printing the table")
    args = parser.parse_args(argv)
    table = numbers_table()
    if args.write is None:
        sys.stdout.write(table)
        return 0
    for name in args.write:
        path = Path(name)
        path.write_text(replace_region(path.read_text(), with_links_from(table, path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
