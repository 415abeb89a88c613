"""The `fer` command: a thin Typer layer over the library.

Exit codes: 0 when the run completed (even with per-file errors, which go to the
errors table), 1 when nothing could be processed, 2 for usage errors (a missing
input path, an unsupported --out extension, a bad option value), 3 when the output
could not be written (disk full), 130 when the run was stopped by SIGINT or SIGTERM.
"""

from __future__ import annotations

import json
import signal
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from fer_batch import defaults

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Batch facial-emotion annotation: faces in images and videos, tracked, with emotion probabilities.",
)

EXIT_NOTHING_PROCESSED = 1
EXIT_USAGE = 2
EXIT_OUTPUT_FAILED = 3  # the output could not be written (disk full, file size limit)
EXIT_INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C (SIGINT); SIGTERM gives the same
PRECISION_HELP = ("The encoder's arithmetic: auto (int8 on a CPU when the weights carry int8 encoders, "
                  "else fp32), fp32 or int8 (CPU only).")
WEIGHTS_HELP = "Checkpoint for the faces of photos (and of videos too, unless --video-weights is given) instead of the shipped photo encoder."
VIDEO_WEIGHTS_HELP = ("Checkpoint for the faces of videos (default: --weights if given, else the shipped video encoder, "
                      "trained on crops as a tracker cuts them).")


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops a run like Ctrl-C: the part in progress is discarded, finished parts stay."""
    raise KeyboardInterrupt


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Errors are printed even with --quiet, which only silences progress and summaries."""
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


@app.command()
def annotate(
    paths: list[Path] = typer.Argument(..., help="Image/video files and folders (walked recursively)."),
    out: str = typer.Option(..., "--out", "-o", help="Output table: .parquet or .csv (summary, tracks and errors tables beside it), or a directory (results/) for a resumable dataset of Parquet parts; with --engine ray also a URI (s3://bucket/results/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the dataset directory given by --out: skip the sources already complete there."),
    glob: list[str] = typer.Option([], "--glob", help="Only files whose relative path or name matches (repeatable)."),
    exclude: list[str] = typer.Option([], "--exclude", help="Skip files whose relative path or name matches (repeatable)."),
    every_nth: int = typer.Option(defaults.EVERY_NTH, "--every-nth", min=1, help="Annotate every n-th video frame."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Annotate about this many frames per second of video (overrides --every-nth)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Annotate at most this many frames per video."),
    threshold: float = typer.Option(defaults.THRESHOLD, "--threshold", help="MTCNN final-stage face probability."),
    proposal_threshold: float = typer.Option(defaults.PROPOSAL_THRESHOLD, "--proposal-threshold", help="MTCNN first-stage (P-Net) face probability for a candidate window; higher is faster on large frames and finds fewer hard faces (0.8: 1.2x at 1080p)."),
    min_face_size: int = typer.Option(defaults.MIN_FACE_SIZE, "--min-face-size", min=1, help="Smallest face, in original-frame pixels."),
    detect_scale: float = typer.Option(defaults.DETECT_SCALE, "--detect-scale", help="Resize frames by this before detection (0.5 = 4x fewer pixels)."),
    detect_every: Optional[int] = typer.Option(None, "--detect-every", min=1, help=f"Run the detector on every k-th annotated frame of a video; in between, refine each track's predicted box with O-Net (default: {defaults.DETECT_EVERY['cpu']} on a CPU, {defaults.DETECT_EVERY['gpu']} on a GPU)."),
    detect_batch: Optional[int] = typer.Option(None, "--detect-batch", min=1, help=f"Video frames per detector call (default: {defaults.DETECT_BATCH['cpu']} on a CPU, {defaults.DETECT_BATCH['gpu']} on a GPU)."),
    small_faces_every: Optional[int] = typer.Option(None, "--small-faces-every", min=1, help=f"Search for new faces under 1.5x --min-face-size only on every k-th annotated frame (rounded up to a detector frame); tracked faces are followed on every frame. 1: on every detector frame (default: {defaults.SMALL_FACES_EVERY['cpu']} on a CPU, {defaults.SMALL_FACES_EVERY['gpu']} on a GPU)."),
    batch_size: int = typer.Option(defaults.BATCH_SIZE, "--batch-size", min=1, help="Face crops per classifier batch."),
    track_iou: float = typer.Option(defaults.TRACK_IOU, "--track-iou", help="Least overlap of a track's predicted box and a detection to continue the track."),
    max_missed: int = typer.Option(defaults.MAX_MISSED, "--max-missed", min=0, help="Detection rounds a track survives without a matching face."),
    temporal: str = typer.Option(defaults.TEMPORAL, "--temporal", help="How a track's frames are combined: bidirectional (look ahead as well as back), causal (only back) or none (each frame alone)."),
    device: str = typer.Option(defaults.DEVICE, "--device", help="auto, cpu or cuda."),
    weights: Optional[Path] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    video_weights: Optional[Path] = typer.Option(None, "--video-weights", help=VIDEO_WEIGHTS_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch, OpenCV and the video decoder (default: the CPUs this process may use); on a CPU, 2 or more also detect windows of frames side by side."),
    precision: str = typer.Option(defaults.PRECISION, "--precision", help=PRECISION_HELP),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write a self-contained HTML report here."),
    render: Optional[Path] = typer.Option(None, "--render", help="Also write annotated copies of the inputs into this folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary on the terminal."),
    json_summary: bool = typer.Option(False, "--json", help="Print the run summary as JSON on stdout (for scripts); the rest goes to stderr."),
    engine: str = typer.Option(defaults.ENGINE, "--engine", help="local (this process) or ray (a Ray cluster; pip install 'fer-batch[ray]'); ray writes a dataset folder."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --engine ray: the cluster to join (default: start one on this machine)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="With --engine ray: annotators running at once (default: the cluster's CPUs / --threads)."),
    segment_seconds: float = typer.Option(defaults.SEGMENT_S, "--segment-seconds", min=0.04, help="With --engine ray: cut videos into segments of about this length, annotated in parallel and stitched."),
) -> None:
    """Detect, track and classify every face in images and videos."""
    console = Console(stderr=True, quiet=quiet, soft_wrap=True)
    if engine not in defaults.ENGINES:
        raise _fail(f"unknown --engine {engine!r}; use one of {', '.join(defaults.ENGINES)}")
    if report is not None and report.suffix.lower() not in {".html", ".htm"}:
        raise _fail(f"--report must name an .html file, got {report}")
    run_values = dict(  # the RunOptions fields, by their own names (fer_batch.options)
        glob=tuple(glob), exclude=tuple(exclude), every_nth=every_nth, fps=fps, max_frames=max_frames,
        threshold=threshold, proposal_threshold=proposal_threshold, min_face_size=min_face_size, detect_scale=detect_scale, detect_every=detect_every,
        detect_batch=detect_batch, small_faces_every=small_faces_every, batch_size=batch_size, track_iou=track_iou, max_missed=max_missed,
        temporal=temporal,
    )
    if engine == "ray":
        _annotate_on_ray(
            paths, out, resume, console, quiet, json_summary, report, render, ray_address, workers, segment_seconds,
            {**run_values, "device": device, "weights": str(weights) if weights else None,
             "video_weights": str(video_weights) if video_weights else None, "threads": threads, "precision": precision},
        )
        return
    out = Path(out)
    from fer_batch.api import annotate_to_file
    from fer_batch.cli.progress import RichProgress
    from fer_batch.dataset import DatasetError, prepare_directory
    from fer_batch.media import InputPathError, discover_sources
    from fer_batch.options import RunOptions
    from fer_batch.pipeline import Annotator
    from fer_batch.report import plural, print_summary, summary_document
    from fer_batch.writers import OutputPathError, check_output_path

    try:
        output_format = check_output_path(out)
        if resume and output_format != "dataset":
            raise ValueError("--resume continues a dataset directory; give --out a directory such as results/")
        if output_format == "dataset":
            prepare_directory(out, resume)
        options = RunOptions(**run_values)
        sources, unsupported = discover_sources(paths, options.glob, options.exclude)
    except (InputPathError, OutputPathError, DatasetError, ValueError) as error:
        raise _fail(str(error))
    if not sources and not unsupported:
        raise _fail("no images or videos found under the given paths", EXIT_NOTHING_PROCESSED)
    try:
        annotator = Annotator(device=device, weights=weights, threads=threads, precision=precision, video_weights=video_weights)
    except (FileNotFoundError, ValueError) as error:
        raise _fail(str(error))
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with RichProgress(console, enabled=not quiet) as progress:
            result = annotate_to_file(paths, out, annotator=annotator, progress=progress, resume=resume, **asdict(options))
    except KeyboardInterrupt:
        again = " with --resume" if output_format == "dataset" else ""
        kept = f"the complete parts in {out} are kept; " if output_format == "dataset" else "nothing was written; "
        Console(stderr=True).print(f"[yellow]interrupted:[/] {escape(kept)}run the same command{again} to continue")
        raise typer.Exit(EXIT_INTERRUPTED)
    except DatasetError as error:
        raise _fail(str(error))
    except OSError as error:  # the disk is full, a file size limit, the output folder vanished
        kept = " (complete dataset parts are kept)" if output_format == "dataset" else ""
        raise _fail(
            f"could not write the output {out}: {error.strerror or error}; nothing was left under the final name{kept}",
            EXIT_OUTPUT_FAILED,
        )
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    if output_format == "dataset" and result.skipped_sources:
        console.print(f"resumed: {plural(result.skipped_sources, 'source')} already complete in {escape(str(out))} skipped")
    print_summary(result.summary, console)
    console.print(
        f"wrote {plural(result.rows, 'row')} to [bold]{escape(str(result.out_path))}[/]; summary {result.summary_path.name}, "
        f"tracks {result.tracks_path.name}, errors {result.errors_path.name}"
    )
    if report is not None or render is not None:
        _report_and_render(out, report, render, console)
    if json_summary:
        outputs = {"faces": result.out_path, "summary": result.summary_path, "tracks": result.tracks_path,
                   "errors": result.errors_path}
        outputs.update({name: path for name, path in (("report", report), ("render", render)) if path is not None})
        typer.echo(json.dumps(summary_document(result.summary, outputs), indent=2))
    if result.summary.totals["sources_ok"] == 0:
        raise typer.Exit(EXIT_NOTHING_PROCESSED)


def _annotate_on_ray(
    paths: list[Path], out: str, resume: bool, console: Console, quiet: bool, json_summary: bool,
    report: Optional[Path], render: Optional[Path], ray_address: Optional[str], workers: Optional[int],
    segment_seconds: float, options: dict,
) -> None:
    """`fer annotate --engine ray`: the same options, run by fer_batch.ray on a cluster."""
    from fer_batch.dataset import DatasetError, prepare_directory
    from fer_batch.media import InputPathError, discover_sources
    from fer_batch.options import split_options
    from fer_batch.report import plural, print_summary, summary_document
    from fer_batch.writers import OutputPathError, check_output_path

    remote = "://" in out
    try:
        if resume:
            raise ValueError("--resume is for the local engine; give --engine ray a new output folder")
        _, run_options = split_options(options)
        if not remote:
            if check_output_path(Path(out)) != "dataset":
                raise ValueError(f"--engine ray writes a dataset folder; give --out a directory such as results/, not {out}")
            prepare_directory(Path(out), resume=False)
        if remote and (report is not None or render is not None):
            raise ValueError("--report and --render need a local --out; run `fer report` on a local copy")
        sources, unsupported = discover_sources(paths, run_options.glob, run_options.exclude)
    except (InputPathError, OutputPathError, DatasetError, ValueError) as error:
        raise _fail(str(error))
    if not sources and not unsupported:
        raise _fail("no images or videos found under the given paths", EXIT_NOTHING_PROCESSED)
    try:
        from fer_batch import ray as ray_engine

        ray_engine.configure_progress(enabled=not quiet)
        result = ray_engine.annotate_to_directory(
            paths, out, segment_s=segment_seconds, workers=workers, ray_address=ray_address, **options
        )
    except ImportError as error:
        raise _fail(str(error))
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted:[/] the Ray run was stopped; run it again into a new folder")
        raise typer.Exit(EXIT_INTERRUPTED)
    print_summary(result.summary, console)
    console.print(f"wrote {plural(result.rows, 'row')} to [bold]{escape(out)}[/] with Ray "
                  f"({plural(result.units, 'work unit')}); companions _summary, _tracks, _errors and _run.json")
    if report is not None or render is not None:
        _report_and_render(Path(out), report, render, console)
    if json_summary:
        outputs = {"faces": out, **{f"{kind}": f"{out.rstrip('/')}/_{kind}.parquet" for kind in ("summary", "tracks", "errors")}}
        typer.echo(json.dumps(summary_document(result.summary, outputs), indent=2))
    if result.summary.totals["sources_ok"] == 0:
        raise typer.Exit(EXIT_NOTHING_PROCESSED)


def _report_and_render(results: Path, report: Optional[Path], render: Optional[Path], console: Console) -> None:
    from fer_batch.api import write_report
    from fer_batch.report import plural

    with console.status("writing " + " and ".join(
        name for name, wanted in (("annotated copies", render), ("the HTML report", report)) if wanted is not None
    )):
        outputs = write_report(results, report=report, render=render)
    if render is not None:
        console.print(f"rendered {plural(len(outputs.rendered), 'annotated file')} into [bold]{escape(str(render))}[/]")
    for source, reason in outputs.render_failures:
        Console(stderr=True).print(f"[yellow]could not render {escape(source)}: {escape(reason)}[/]")
    if report is not None:
        console.print(f"report: [bold]{escape(str(report))}[/]")


@app.command("report")
def report_command(
    results: Path = typer.Argument(..., help="A results.parquet or results.csv written by `fer annotate`."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML file to write."),
    render: Optional[Path] = typer.Option(None, "--render", help="Also write annotated copies of the inputs here."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """HTML report (and optionally annotated media) for an existing annotate output."""
    console = Console(stderr=True, quiet=quiet, soft_wrap=True)
    if out.suffix.lower() not in {".html", ".htm"}:
        raise _fail(f"--out must name an .html file, got {out}")
    try:
        _report_and_render(results, out, render, console)
    except (FileNotFoundError, ValueError) as error:
        raise _fail(str(error))


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="fer2013.csv or an image-folder root with train/ and test/."),
    out: Path = typer.Option(Path(defaults.TRAIN_OUT_DIR), "--out", help="Run folder: last.pt, best.pt, metrics.csv."),
    epochs: int = typer.Option(defaults.TRAIN_EPOCHS, "--epochs", min=0, help="CNN epochs on augmented stills (0 with --init-from: train only the GRU stage on that encoder)."),
    temporal_epochs: int = typer.Option(defaults.TRAIN_TEMPORAL_EPOCHS, "--temporal-epochs", min=0, help="GRU epochs on synthetic clips."),
    batch_size: int = typer.Option(defaults.TRAIN_BATCH_SIZE, "--batch-size", min=2),
    learning_rate: float = typer.Option(defaults.TRAIN_LEARNING_RATE, "--lr", help="Peak learning rate of the one-cycle schedule (with --schedule plateau: the starting rate)."),
    optimizer: str = typer.Option(defaults.TRAIN_OPTIMIZER, "--optimizer", help="The CNN stage's optimiser: adamw, or sgd (Nesterov momentum 0.9)."),
    schedule: str = typer.Option(defaults.TRAIN_SCHEDULE, "--schedule", help="The CNN stage's learning rate: onecycle, or plateau (cut when the --holdout accuracy stops rising)."),
    holdout: float = typer.Option(defaults.TRAIN_HOLDOUT, "--holdout", min=0.0, max=0.49, help="Share of the training images held out of training and scored every CNN epoch (steers --schedule plateau)."),
    plateau_patience: int = typer.Option(defaults.TRAIN_PLATEAU_PATIENCE, "--plateau-patience", min=0, help="CNN epochs without a better held-out accuracy before a plateau cut."),
    plateau_factor: float = typer.Option(defaults.TRAIN_PLATEAU_FACTOR, "--plateau-factor", min=0.01, max=0.99, help="The learning rate's cut on a plateau."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", min=0.0, help="The CNN stage's weight decay (default: 0.05 with adamw, decoupled; 5e-4 with sgd, as L2)."),
    seed: int = typer.Option(defaults.TRAIN_SEED, "--seed"),
    device: str = typer.Option(defaults.DEVICE, "--device", help="auto, cpu or cuda."),
    model: str = typer.Option(defaults.TRAIN_MODEL, "--model", help="Architecture preset: base, wide, large or small (see the model card)."),
    precision: str = typer.Option(defaults.TRAIN_PRECISION, "--precision", help="auto (fp16 on CUDA, bf16 on CPUs with native bf16), fp32, bf16, fp16."),
    eval_every: int = typer.Option(defaults.TRAIN_EVAL_EVERY, "--eval-every", min=1, help="Score PublicTest every N CNN epochs (always over the last fifth)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pt."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Fine-tune: start from this checkpoint's weights on a fresh schedule."),
    init_member: Optional[int] = typer.Option(None, "--init-member", min=1, help="With an ensemble --init-from: start from this member (1-based)."),
    limit_train: Optional[int] = typer.Option(None, "--limit-train", min=1, help="Use only this many training images (smoke runs)."),
    limit_test: Optional[int] = typer.Option(None, "--limit-test", min=1, help="Use only this many PublicTest images."),
    clips_per_epoch: int = typer.Option(defaults.TRAIN_CLIPS_PER_EPOCH, "--clips-per-epoch", min=1),
    realistic_clips: bool = typer.Option(False, "--realistic-clips", help="Train the GRU on clips with real video's shake, low resolution, blur and JPEG artefacts."),
    mixup_alpha: float = typer.Option(defaults.TRAIN_MIXUP_ALPHA, "--mixup-alpha", min=0.0, help="Mixup on the CNN stage's crops: each blended with another by a Beta(alpha, alpha) share, labels (and the teacher's answer) alike; 0: off."),
    realistic_stills: float = typer.Option(defaults.TRAIN_REALISTIC_STILLS, "--realistic-stills", min=0.0, max=1.0, help="Share of the CNN stage's crops made to look like real detections: small, blurred, JPEG, a little turned."),
    small: bool = typer.Option(False, "--small", help="Same as --model small: a tiny network, for smoke tests."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", min=1, help="Stop after this many epochs; continue later with --resume."),
    tta_flip: bool = typer.Option(defaults.TRAIN_TTA_FLIP, "--tta-flip/--no-tta-flip", help="Flip averaging at evaluation, stored for annotate (off: half the cost)."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Distil from this checkpoint (e.g. the shipped ensemble)."),
    distill_weight: float = typer.Option(defaults.TRAIN_DISTILL_WEIGHT, "--distill-weight", help="Share of the distillation term in the loss (with --teacher)."),
    distill_temperature: float = typer.Option(defaults.TRAIN_DISTILL_TEMPERATURE, "--distill-temperature", min=0.1, help="Softmax temperature of distillation."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train the CNN-GRU on FER2013 (best epoch chosen on PublicTest, never trained on)."""
    from fer_batch.model import MODEL_PRESETS
    from fer_batch.training.data import DatasetError
    from fer_batch.training.train import TrainConfig, train as run_training

    console = Console(stderr=True, quiet=quiet, soft_wrap=True)
    preset = "small" if small else model
    if preset not in MODEL_PRESETS:
        raise _fail(f"unknown --model {preset!r}; use one of {', '.join(MODEL_PRESETS)}")
    config = TrainConfig(
        data=str(data), out_dir=str(out), epochs=epochs, temporal_epochs=temporal_epochs, batch_size=batch_size,
        learning_rate=learning_rate, seed=seed, device=device, limit_train=limit_train, limit_test=limit_test,
        clips_per_epoch=clips_per_epoch, realistic_clips=realistic_clips, realistic_stills=realistic_stills,
        mixup_alpha=mixup_alpha, init_from=str(init_from) if init_from else None, init_member=init_member,
        model=MODEL_PRESETS[preset], precision=precision, eval_every=eval_every, tta_flip=tta_flip,
        teacher=str(teacher) if teacher else None, distill_weight=distill_weight, distill_temperature=distill_temperature,
        optimizer=optimizer, schedule=schedule, holdout=holdout, plateau_patience=plateau_patience,
        plateau_factor=plateau_factor, weight_decay=weight_decay,
    )
    try:
        result = run_training(config, resume=resume, show_progress=not quiet, log=console.print, stop_after=stop_after)
    except (DatasetError, ValueError) as error:
        raise _fail(str(error))
    if result.best_checkpoint is None:
        console.print(f"stopped after epoch {result.epochs_done}, before any epoch was scored on PublicTest (--eval-every "
                      f"{eval_every}); the run goes on from {result.last_checkpoint} with --resume")
    else:
        console.print(f"best checkpoint {result.best_checkpoint} (PublicTest accuracy {result.best_test_accuracy:.4f})")


@app.command()
def evaluate(
    data: Path = typer.Option(..., "--data", help="fer2013.csv, an image-folder root, or a folder of <emotion>/ images."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Checkpoint (default: the shipped weights)."),
    split: Optional[str] = typer.Option(None, "--split", help="train, test, private (CSV) or a subfolder; default: test if present."),
    out: Path = typer.Option(defaults.EVALUATION_OUT_DIR, "--out", help="Folder for metrics, confusion matrix, samples."),
    detect: bool = typer.Option(False, "--detect", help="Images are whole photos: detect and crop the largest face first."),
    sequence: bool = typer.Option(True, "--sequence/--no-sequence", help="Also score synthetic clips (CNN vs CNN-GRU)."),
    device: str = typer.Option(defaults.DEVICE, "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option(defaults.PRECISION, "--precision", help=PRECISION_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate only this many images."),
    upscale: Optional[int] = typer.Option(None, "--upscale", min=1, help="With --detect: enlarge and pad each image this many times first (face crops such as FER2013's, e.g. 3), and also score the same faces' own crops."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Accuracy, per-class precision/recall/F1, confusion matrix and sample grid."""
    from fer_batch.training.data import DatasetError
    from fer_batch.training.evaluate import evaluate as run_evaluation, print_evaluation

    console = Console(stderr=True, quiet=quiet, soft_wrap=True)
    try:
        result = run_evaluation(
            data=data, weights=weights, split=split, out_dir=out, detect=detect, sequence=sequence,
            device=device, limit=limit, show_progress=not quiet, upscale=upscale, precision=precision,
        )
    except (DatasetError, FileNotFoundError, ValueError) as error:
        raise _fail(str(error))
    print_evaluation(result, console)


@app.command()
def serve(
    host: str = typer.Option(defaults.SERVE_HOST, "--host", help="Address to listen on (only this machine by default; the server has no log-in)."),
    port: int = typer.Option(defaults.SERVE_PORT, "--port", min=1, max=65535),
    work_dir: Path = typer.Option(defaults.SERVE_WORK_DIR, "--work-dir", help="Uploads and results go here, one folder per job."),
    max_upload_mb: float = typer.Option(defaults.SERVE_MAX_UPLOAD_MB, "--max-upload-mb", min=1, help="Largest upload (all files of one request together)."),
    device: str = typer.Option(defaults.DEVICE, "--device", help="auto, cpu or cuda."),
    weights: Optional[Path] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    video_weights: Optional[Path] = typer.Option(None, "--video-weights", help=VIDEO_WEIGHTS_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch, OpenCV and the video decoder."),
    precision: str = typer.Option(defaults.PRECISION, "--precision", help=PRECISION_HELP),
) -> None:
    """A local web page to try the tool: upload photos or videos, watch progress, see and download the results."""
    console = Console(stderr=True, soft_wrap=True)
    try:
        from fer_batch.serve import serve as run_server
        from fer_batch.pipeline import Annotator
    except ImportError as error:
        raise _fail(str(error))
    if host not in {"127.0.0.1", "localhost", "::1"}:
        console.print(f"[yellow]warning:[/] listening on {escape(host)}: anyone who can reach it can upload files; there is no log-in")
    console.print(f"fer serve: open [bold]http://{'localhost' if host in {'127.0.0.1', '::1'} else host}:{port}/[/]"
                  f" (work folder {escape(str(work_dir))}; Ctrl-C stops)")
    run_server(host, port, work_dir=work_dir, max_upload_mb=max_upload_mb,
               make_annotator=lambda: Annotator(device=device, weights=weights, threads=threads, precision=precision,
                                                video_weights=video_weights))


def main() -> None:
    app()
