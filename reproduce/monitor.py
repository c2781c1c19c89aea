"""Watching a training run: log files, training curves and progress (rank 0 only).

`TrainLog` keeps the run's records as JSON lines (every key) and CSV (fixed columns) and
redraws the curves (loss and mean IU against updates, matplotlib's Agg backend) after
each record. `Progress` is a tqdm bar on a terminal; its display lines go through
`logging` (logger `reproduce`), so piped output holds plain lines and no carriage returns.

Watching must never stop training: a failure to write a log file or draw the plot is
reported once (a logging warning naming the file and the error) and the run goes on.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TextIO

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from eval.metrics import METRIC_LABELS
from porting.atomic import atomic_path

logger = logging.getLogger(__name__)

LOG_COLUMNS = ("iter", "loss", "lr", "images_per_s", "mean_iu")
PLOT_SIZE_INCHES = (8.0, 6.0)
PLOT_DPI = 100
#: the lower panel's note before the first validation
NO_VALIDATION = "no validation yet"
#: loss axis turns logarithmic when the largest plotted loss exceeds the smallest by this factor
LOG_SCALE_SPAN = 100.0


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(updates, values) of the records that carry a finite number under `key`."""
    points = [
        (record["iter"], float(record[key]))
        for record in records
        if isinstance(record.get(key), (int, float)) and math.isfinite(record[key])
    ]
    return [point[0] for point in points], [point[1] for point in points]


def plot_curves(records: Sequence[dict[str, Any]], path: Path, no_validation: str = NO_VALIDATION) -> None:
    """Draw loss (top) and mean IU (bottom) against updates into the PNG `path`, atomically.

    The loss axis is logarithmic when the loss is positive and spans more than
    `LOG_SCALE_SPAN` (an unnormalized loss falls from ~1e5 by orders of magnitude);
    a constant or single-point series plots as a flat line or a dot. A panel with
    nothing to draw says so in words.

    Args:
        records: log records; those with a finite "loss" or "mean_iu" are plotted.
        path: the PNG to write (its folder must exist).
        no_validation: the note in the lower panel while no record has a mean IU.
    """
    figure = Figure(figsize=PLOT_SIZE_INCHES, dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, iu_axes = figure.subplots(2, 1, sharex=True)
    updates, losses = _series(records, "loss")
    loss_axes.plot(updates, losses, color="tab:blue", marker="." if len(losses) < 50 else None)
    if losses and min(losses) > 0 and max(losses) > LOG_SCALE_SPAN * min(losses):
        loss_axes.set_yscale("log")
    loss_axes.set_ylabel("training loss (smoothed)")
    loss_axes.grid(True, which="both", alpha=0.4)
    updates, mean_ius = _series(records, "mean_iu")
    iu_axes.plot(updates, [100 * value for value in mean_ius], color="tab:orange", marker=".")
    if not mean_ius:
        iu_axes.set_yticks([])  # no scale to show
        iu_axes.text(0.5, 0.5, no_validation, transform=iu_axes.transAxes, ha="center", va="center", wrap=True)
    iu_axes.set_ylabel("validation mean IU (%)")
    iu_axes.set_xlabel("updates")
    iu_axes.grid(True, alpha=0.4)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")


def _record(line: bytes) -> dict[str, Any] | None:
    """One log.jsonl line as its record, or None when it is no JSON object with an integer "iter"."""
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return None
    if not isinstance(record, dict) or isinstance(record.get("iter"), bool) or not isinstance(record.get("iter"), int):
        return None
    return record


class TrainLog:
    """The run's records in `out_dir`: log.jsonl (all keys), log.csv (`LOG_COLUMNS`), loss.png (`plot_curves`).

    Args:
        out_dir: the run folder (created by the trainer).
        no_validation: the plot's note while no validation has run (`plot_curves`).
    """

    def __init__(self, out_dir: Path, no_validation: str = NO_VALIDATION) -> None:
        self.no_validation = no_validation
        self.jsonl = out_dir / "log.jsonl"
        self.csv = out_dir / "log.csv"
        self.plot = out_dir / "loss.png"
        self.records: list[dict[str, Any]] = []
        self._reported: set[str] = set()

    def restart(self, resumed_iter: int) -> None:
        """Keep what happened before the resumed iteration; later records are about to be redone.

        A loss record at iteration k is measured before update k+1, an evaluation record at
        k after update k, so at iteration s the loss is recomputed but the evaluation stays.
        A line of log.jsonl that is no record (cut short, edited by hand) is data too: it
        stays in the file where it was, with a warning naming its line; the records after
        it are read on.

        Args:
            resumed_iter: the update count the run continues from (0 for a fresh run).
        """
        kept: list[dict[str, Any]] = []
        lines: list[bytes] = []  # what log.jsonl keeps: the kept records, and every line that is no record
        try:
            content = self.jsonl.read_bytes() if self.jsonl.exists() else b""
        except OSError as error:
            logger.warning(
                "reading %s failed (%s); it is left as it is and new records are appended", self.jsonl, error
            )
            content = None
        for number, line in enumerate((content or b"").splitlines(), start=1):
            record = _record(line)
            if record is None:
                if line.strip():
                    logger.warning(
                        "%s:%d: not a log record, kept as it is (a record is one JSON object with an integer 'iter'): %r",
                        self.jsonl,
                        number,
                        line[:80].decode("utf-8", "replace"),
                    )
                    lines.append(line)
                continue
            redone = "loss" in record or "ids" in record
            if record["iter"] < resumed_iter or (record["iter"] == resumed_iter and not redone):
                kept.append(record)
                lines.append(line)
        self.records = kept
        if content is not None:
            with self._guard("writing", self.jsonl), atomic_path(self.jsonl) as temporary:
                Path(temporary).write_bytes(b"".join(line + b"\n" for line in lines))
        with self._guard("writing", self.csv):
            text = io.StringIO()
            writer = csv.DictWriter(text, LOG_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(record for record in self.records if "ids" not in record)
            self.csv.write_text(text.getvalue())
        self._redraw()

    def append(self, record: dict[str, Any]) -> None:
        """Add one record to both files and redraw the plot.

        Args:
            record: {"iter": update, ...}, e.g. loss/lr/images_per_s or validation metrics.
        """
        self.records.append(record)
        with self._guard("writing", self.jsonl), open(self.jsonl, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        with self._guard("writing", self.csv), open(self.csv, "a", newline="") as handle:
            csv.DictWriter(handle, LOG_COLUMNS, extrasaction="ignore").writerow(record)
        self._redraw()

    def append_ids(self, iteration: int, ids: list[str]) -> None:
        """Record the image ids of the update made at `iteration` as a log.jsonl line of their own.

        Args:
            iteration: the update the images went into.
            ids: their dataset ids, in the order they were drawn.
        """
        record = {"iter": iteration, "ids": ids}
        self.records.append(record)
        with self._guard("writing", self.jsonl), open(self.jsonl, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _redraw(self) -> None:
        with self._guard("plotting", self.plot):
            plot_curves(self.records, self.plot, self.no_validation)

    @contextmanager
    def _guard(self, action: str, path: Path) -> Iterator[None]:
        """Swallow any failure of `action` on `path`, warning about the first one of its kind."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - watching must never stop training
            key = f"{action} {path.name}"
            if key not in self._reported:
                self._reported.add(key)
                logger.warning(
                    "%s %s failed (%s: %s); training goes on, further failures of it are not reported",
                    action,
                    path,
                    type(error).__name__,
                    error,
                )


class Progress:
    """A tqdm bar of updates on a terminal, and one logged line per display.

    On a stream that is no terminal (a pipe or a file) tqdm stays silent, so only the
    logged lines appear there and none holds a carriage return.

    Args:
        total: the run's last update (max_iter).
        initial: the update the run starts from (after a resume).
        enabled: False on ranks other than 0.
        stream: where the bar goes (stderr).
    """

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.bar = tqdm(
            total=total,
            initial=initial,
            unit="update",
            file=stream,
            dynamic_ncols=True,
            disable=None if enabled else True,
            leave=True,
        )
        self.enabled = enabled

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.close()

    def redirect_logging(self) -> AbstractContextManager[None]:
        """While the bar is live, print log lines above it instead of through it."""
        return logging_redirect_tqdm() if not self.bar.disable else nullcontext()

    def step(self, iteration: int, loss: float) -> None:
        """Advance the bar to `iteration`, showing the smoothed loss."""
        if self.bar.disable:
            return
        self.bar.set_postfix_str(f"loss {loss:.6g}", refresh=False)
        self.bar.update(iteration - self.bar.n)

    def validation(self, iteration: int, metrics: dict[str, float]) -> None:
        """Log the validation scores after `iteration` updates, in percent, as Caffe logs its test net."""
        if self.enabled:
            shown = ", ".join(f"{METRIC_LABELS.get(key, key)} {100 * value:.2f}" for key, value in metrics.items())
            logger.info("Iteration %d, validation: %s", iteration, shown)

    def display(self, iteration: int, loss: float, rate: float, images_per_s: float) -> None:
        """Log Caffe's display line for `iteration` (rank 0 only)."""
        if self.enabled:
            logger.info("Iteration %d, loss = %.6g, lr = %g, %.2f images/s", iteration, loss, rate, images_per_s)
