"""`python -m eval.table`: score nets on a VOC/SBD split and set them beside the published numbers.

Nets come from the training stage folders (`--runs DIR`), converted checkpoints
(`--checkpoint M.pt`), original Caffe pairs (`--prototxt P --caffemodel W`) or published
models (`--model NAME`, weights from `--caffemodel W` or the model cache). Published numbers are compared only when the
scored set is the exact set they were measured on (e.g. all 736 images of seg11valid),
never on a subset or the synthetic data. `--dataset KIND:ROOT --split S` scores a split
of any dataset (fcndata.registry) with its own classes; nothing published applies there.
Each net's input is prepared with the mean it carries (`net.metadata`).

The other families' splits: PASCAL-Context val (`--voc-root` holding VOC2010/ and
`--pascalcontext-root`), NYUDv2 test (`--nyud-root`), SIFT Flow test (`--siftflow-root`),
each prepared as its authors' data layer does. A NYUDv2 net reads the tops of its authors'
namesake (nyud-fcn32s-hha reads HHA into its `data` input): a net is recognized by its
name (stage folder or file stem, e.g. nyud-fcn32s-hha-heavy), else by input names among
color, depth and hha. SIFT Flow nets are scored per head, each on its own labels: JSON
`{net: {"score_sem": {...}, "score_geo": {...}}}`; the semantic means leave out the
classes absent from the test labels, as the papers do (`mean_iu_all_classes` keeps the
authors' released scoring, which counts an absent class predicted somewhere as IU 0).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fcndata import VOC_CLASSES, dataset_for_split, load_ids
from fcndata.downloads import (
    NYUD_ROOT_HELP,
    PASCALCONTEXT_ROOT_HELP,
    SBD_ROOT_HELP,
    SIFTFLOW_ROOT_HELP,
    VOC_ROOT_HELP,
)
from fcndata.families import ROOT_KEYS, FamilyDataset, check_roots, open_split
from fcndata.image import SegmentationFiles
from fcndata.nyud import TOPS as NYUD_TOPS
from fcndata.registry import DATASETS, parse_dataset
from porting import cli
from porting.atomic import atomic_path
from porting.errors import FcnError
from porting.numerics import TF32_HELP, set_fp32_precision
from prototxt import nets as published_nets
from prototxt.backbone import BACKBONE_RUNS, Measures, measure

from .infer import family_heads, score
from .metrics import METRIC_LABELS
from .nets import RUN_NAMES, NetSource, add_net_arguments, net_sources
from .published import (
    CVPR2015_TABLE1,
    METRICS,
    PUBLISHED,
    PUBLISHED_SET_SIZE,
    TABLE1,
    TABLE1_ROW_OF_BACKBONE,
    published_name,
)

#: the other families' scoring splits -> family
FAMILY_SPLITS = {"pascalcontext-val": "pascalcontext", "nyud-test": "nyud", "siftflow-test": "siftflow"}
SPLITS = ("voc2011seg11valid", "voc2011val", "voc2012val", "sbdval", *FAMILY_SPLITS)


def _percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def split_stages(split: str) -> tuple[str, ...]:
    """The run folders whose nets a split scores: the VOC stages and backbones, or the family's nets."""
    family = FAMILY_SPLITS.get(split)
    if family is None:
        return (*RUN_NAMES, "voc-fcn-alexnet")
    return tuple(net for net, entry in published_nets.NETS.items() if entry.family.name == family)


def nyud_tops(name: str, net) -> list[str]:
    """The NYUDv2 tops a net reads: its authors' namesake's (by name), else its inputs' names."""
    known = [
        candidate
        for candidate in published_nets.NETS
        if candidate.startswith("nyud-") and (name == candidate or name.startswith(candidate + "-"))
    ]
    if known:
        return published_nets.nyud_tops(max(known, key=len))
    inputs = list(getattr(net, "inputs", []))
    if inputs and all(top in NYUD_TOPS for top in inputs):
        return [*inputs, "label"]
    raise FcnError(
        f"{name}: cannot tell which NYUDv2 inputs the net reads (its inputs: {', '.join(inputs) or 'unknown'}); "
        "name the file or stage folder after the authors' net (nyud-fcn32s-color, -hha, -color-d, -color-hha) "
        "or name its inputs color, depth, hha"
    )


@dataclass(frozen=True)
class EvalData:
    """The data a table scores: a VOC/SBD split, another family's split, or a split of a dataset by name.

    `split` names one of `SPLITS`, or with `dataset` (KIND:ROOT, `fcndata.registry`) one of
    that dataset's splits (None: its validation split). The roots are the folders the
    split reads (`fcndata.families.ROOTS`); `ids` a file replacing the split's id list.
    """

    split: str | None = None
    dataset: str | None = None
    roots: Mapping[str, Path | None] = field(default_factory=dict)
    ids: Path | None = None

    @property
    def family(self) -> str | None:
        """The other family whose split this is (pascalcontext, nyud, siftflow), else None."""
        return None if self.dataset is not None else FAMILY_SPLITS.get(self.split or "")


def family_dataset(data: EvalData, name: str, net) -> FamilyDataset:
    """The dataset a net of another family is scored on (for NYUDv2, with the tops that net reads)."""
    family = data.family
    assert family is not None and data.split is not None
    split = data.split.rsplit("-", 1)[1]
    tops = nyud_tops(name, net) if family == "nyud" else None
    ids = load_ids(data.ids) if data.ids else None
    return open_split(family, split, data.roots, reader=data.split, tops=tops, ids=ids)


def _display_entries(results: dict[str, dict]) -> dict[str, tuple[dict, str | None]]:
    """Table row name -> (metrics, published key): one row per net, or per head of a two-headed net."""
    rows = {}
    for name, entry in results.items():
        key = published_name(name)
        if "score_sem" in entry:
            for head in ("sem", "geo"):
                rows[f"{name} {head}"] = (entry[f"score_{head}"], None if key is None else f"{key} {head}")
        else:
            rows[name] = (entry, key)
    return rows


def table_rows(split: str, results: dict[str, dict]) -> tuple[list[list[str]], list[str]]:
    """Rows (net, source, four metric cells) and notes; published cells read `pub (+diff)`."""
    rows, notes, cited = [], [], {}
    expected = PUBLISHED_SET_SIZE.get(split)
    comparable = True
    published_split = PUBLISHED.get(split, {})
    if not published_split:
        notes.append(f"nothing published to compare for {split}")
    for name, (entry, key) in _display_entries(results).items():
        rows.append([name, "measured", *(_percent(entry[m]) for m in METRICS)])
        if "convention" in entry:
            notes.append(f"{name}: {entry['convention']}: {_percent(entry['mean_iu_all_classes'])}")
        if key is None or key not in published_split:
            if published_split:
                notes.append(f"{name}: no published {split} numbers for a net of this name")
            continue
        if entry["n_images"] != expected:
            comparable = False
            continue
        for published in published_split[key]:
            cells = []
            for metric in METRICS:
                value = published.value(metric)
                if value is None:
                    cells.append("-")
                else:
                    measured = 100 * entry[metric]
                    diff = "n/a" if math.isnan(measured) else f"{measured - value:+.2f}"
                    cells.append(f"{value:g} ({diff})")
            rows.append(["", f"{published.source.label} ({key})", *cells])
            cited[published.source.label] = published.source.citation
    if published_split and not comparable:
        notes.append(
            f"nothing published to compare: the published {split} numbers are for the real dataset "
            f"({expected} images); this run scored a different set"
        )
    if cited:
        notes.append("published cells: value as printed (measured - published, percentage points)")
        notes += [f"{label}: {citation}" for label, citation in cited.items()]
    return rows, notes


def render_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * 2 + ["---:"] * 4) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def per_class_lines(results: dict[str, dict], classes: Sequence[str]) -> list[str]:
    """One line per net: each class's IU in percent, by name ("-" for a class absent from the set)."""
    return [
        f"{name} per-class IU: " + ", ".join(f"{cls} {_percent(iu)}" for cls, iu in zip(classes, entry["per_class_iu"]))
        for name, entry in results.items()
    ]


def format_table(
    split: str, n_images: int, results: dict[str, dict], markdown: bool = False, classes: Sequence[str] = ()
) -> str:
    """The comparison as text or markdown, in percent; with `classes`, each net's per-class IU after it."""
    header = ["net", "source", *(METRIC_LABELS[m] for m in METRICS)]
    rows, notes = table_rows(split, results)
    title = f"{split}: {n_images} images, metrics in percent"
    per_class = per_class_lines(results, classes) if classes else []
    if markdown:
        return "\n".join(
            [f"**{title}**", "", render_markdown(header, rows), "", *(f"- {n}" for n in notes + per_class)]
        )
    return "\n".join([title, render_text(header, rows), *notes, *per_class])


def backbone_table(measured: dict[str, Measures]) -> str:
    """CVPR 2015 Table 1's architecture columns computed from each backbone FCN-32s net beside the printed ones."""
    header = ["net", "source", "conv layers", "parameters", "receptive field", "max stride", "forward ms"]
    rows = []
    for name, m in measured.items():
        row = TABLE1[TABLE1_ROW_OF_BACKBONE[BACKBONE_RUNS[name]]]
        rows.append(
            [
                name,
                "measured",
                str(m.conv_layers),
                f"{m.parameters / 1e6:.2f}M",
                str(m.receptive_field),
                str(m.max_stride),
                "-",
            ]
        )
        rows.append(
            [
                "",
                f"{CVPR2015_TABLE1.label} ({row.net})",
                str(row.conv_layers),
                f"{row.parameters_m}M",
                str(row.receptive_field),
                str(row.max_stride),
                f"{row.forward_ms:g} (K40c)",
            ]
        )
    notes = [
        "measured from the nets: conv layers on the longest input-to-score path (cast fc layers and score_fr "
        "included), learned parameters (the fixed upsampling excluded), receptive field and stride of score_fr "
        "by the coordinate maps; forward times: python -m bench"
    ]
    if any(BACKBONE_RUNS[name] == "googlenet" for name in measured):
        notes.append(
            "GoogLeNet's printed field, 907, is the one with its final 7x7 average pooling; the FCN drops that "
            "pooling (as the paper says), which makes the field 6 x 32 = 192 pixels smaller"
        )
    notes.append(f"{CVPR2015_TABLE1.label}: {CVPR2015_TABLE1.citation}")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(["CVPR 2015 Table 1 columns", *lines, *notes])


def _json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def write_json(results: dict[str, dict], path: str | Path) -> None:
    """Write `{net name: score entry}` atomically, NaN (absent class) as null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        json.dump(_json_safe(results), stream, indent=2, allow_nan=False)
        stream.write("\n")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(
        "eval.table",
        "Score FCN nets (whole image, argmax of 'score') and print them beside the published numbers.",
    )
    parser.add_argument(
        "--split",
        help=f"evaluation split: {', '.join(SPLITS)}; with --dataset one of its splits (default: its validation split)",
    )
    parser.add_argument("--dataset", help=f"KIND:ROOT, a dataset by name ({', '.join(DATASETS)}) in place of VOC/SBD")
    parser.add_argument("--voc-root", help=VOC_ROOT_HELP)
    parser.add_argument("--sbd-root", help=SBD_ROOT_HELP)
    parser.add_argument("--pascalcontext-root", help=PASCALCONTEXT_ROOT_HELP)
    parser.add_argument("--nyud-root", help=NYUD_ROOT_HELP)
    parser.add_argument("--siftflow-root", help=SIFTFLOW_ROOT_HELP)
    parser.add_argument("--ids", help="image id list replacing the split's own (one id per line)")
    add_net_arguments(parser, many=True)
    cli.add_device(parser)
    parser.add_argument("--json", help="write {net: metrics} here (fractions in [0, 1], null = absent class)")
    parser.add_argument("--predictions", help="write <net>/<id>.png predictions in the VOC palette here")
    parser.add_argument("--panels", action="store_true", help="with --predictions: also image|label|prediction panels")
    parser.add_argument("--format", choices=("text", "markdown"), default="text", help="table format on stdout")
    parser.add_argument("--tf32", action="store_true", help=TF32_HELP)
    cli.add_quiet(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    set_fp32_precision(args.tf32)
    if args.panels and not args.predictions:
        parser.error("--panels needs --predictions DIR")
    device = cli.resolve_device(parser, args.device)
    if args.dataset is None and args.split not in SPLITS:
        parser.error(f"--split must be one of {', '.join(SPLITS)} (or name a dataset with --dataset KIND:ROOT)")
    if args.dataset is not None and (args.voc_root or args.sbd_root or args.ids):
        parser.error("--dataset names the data; --voc-root, --sbd-root and --ids are for the VOC/SBD splits")
    cli.setup_logging(args.quiet)
    return cli.run(lambda: score_table(args, parser, device))


@dataclass
class Scores:
    """What `score_nets` measured."""

    title: str  # the split as the table names it
    n_images: int
    results: dict[str, dict]  # net name -> `eval.infer.score` entry (per head for SIFT Flow)
    classes: tuple[str, ...]  # class names, for the per-class lines ((): the family's own, not printed)
    measured: dict[str, Measures] = field(default_factory=dict)  # backbone runs' architecture (papers' data)


def score_nets(
    nets: Sequence[NetSource],
    data: EvalData,
    *,
    device: torch.device,
    progress: bool = True,
    prediction_dir: Path | None = None,
    panels: bool = False,
) -> Scores:
    """Score each net on the whole split, one net in memory at a time.

    Each net's input is prepared with the mean it carries (`net.metadata`); another
    family's nets as their authors' data layer prepares them.

    Args:
        nets: the nets (`eval.nets`), each loaded when its turn comes.
        data: the split and its folders.
        device: where the nets run.
        progress: a progress bar per net on stderr.
        prediction_dir: write `<net>/<id>.png` predictions under it when given.
        panels: with `prediction_dir`, also image | label | prediction panels.

    Returns:
        The scores, with the architecture measures of the nets named after a backbone run.

    Raises:
        FcnError: a missing folder, a net that does not load or does not fit the data.
    """
    family = data.family
    heads = family_heads(family) if family else None
    opened: SegmentationFiles | None = None  # the one dataset of every net; None: each family net's own
    if family is not None:
        check_roots(family, data.roots, reader=data.split or "")
        classes: tuple[str, ...] = ()
        title = data.split or ""
    elif data.dataset is not None:
        spec = parse_dataset(data.dataset)
        split = data.split or spec.kind.val_split
        opened = spec.open(split)
        classes, title = spec.classes, f"{spec}:{split}"
    else:
        if data.split not in SPLITS:
            raise FcnError(f"unknown split {data.split!r}; one of {', '.join(SPLITS)}")
        opened = dataset_for_split(data.split, data.roots.get("voc_root"), data.roots.get("sbd_root"), data.ids)
        classes, title = VOC_CLASSES, data.split
    scores = Scores(title, 0, {}, classes)
    for source in nets:
        net = source.load()
        if source.name in BACKBONE_RUNS and data.dataset is None:
            scores.measured[source.name] = measure(net.net_param, source=source.name)
        dataset: SegmentationFiles | FamilyDataset
        if opened is None:  # another family's net: its data prepared as its data layer does
            dataset = family_dataset(data, source.name, net)
        else:
            dataset = opened
            opened.mean = net.metadata.mean or opened.mean
        scores.n_images = max(scores.n_images, len(dataset))
        scores.results[source.name] = score(
            net,
            dataset,
            num_classes=len(classes),
            heads=heads,
            device=device,
            progress=progress,
            prediction_dir=prediction_dir / source.name if prediction_dir is not None else None,
            panels=panels,
            name=source.name,
        )
        del net
    return scores


def report(scores: Scores, markdown: bool = False) -> str:
    """The comparison table (`format_table`), then the backbones' architecture beside Table 1 if any was scored."""
    text = format_table(scores.title, scores.n_images, scores.results, markdown=markdown, classes=scores.classes)
    return f"{text}\n\n{backbone_table(scores.measured)}" if scores.measured else text


def score_table(args: argparse.Namespace, parser: argparse.ArgumentParser, device: torch.device) -> None:
    """Score every net the flags name, print the table on stdout, write the JSON."""
    nets = net_sources(args, parser, split_stages(args.split or ""))
    roots = {key: None if getattr(args, key) is None else Path(getattr(args, key)) for key in ROOT_KEYS}
    data = EvalData(args.split, args.dataset, roots, None if args.ids is None else Path(args.ids))
    prediction_dir = Path(args.predictions) if args.predictions else None
    scores = score_nets(
        nets, data, device=device, progress=not args.quiet, prediction_dir=prediction_dir, panels=args.panels
    )
    print(report(scores, markdown=args.format == "markdown"), flush=True)
    if args.json:
        write_json(scores.results, args.json)
        cli.wrote(args.json)


if __name__ == "__main__":
    sys.exit(main())
