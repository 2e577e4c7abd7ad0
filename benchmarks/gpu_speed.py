"""GPU training throughput, peak memory and MFU of InvPT, TaskPrompter and HPS, and NYUD-val evaluation throughput.

    python benchmarks/gpu_speed.py [--models invpt,taskprompter,hps] [--modes fp32,bf16,bf16+factored,bf16+compile+ckpt]
                                   [--size 512] [--batch N] [--steps 10] [--warmup 3] [--eval] [--eval-images 654]
                                   [--device cuda] [--peak-tflops T] [--row-timeout 360]
                                   [--out benchmarks/results/gpu_speed.md] [--smoke]

Models: the repository's NYUD-v2 recipes with random weights: configs/nyud/invpt.yaml (ViT-L/16,
embed_dim 512 + 64, blocks 6/12/24), configs/nyud/taskprompter.yaml (ViT-L/16, embed_dim 768,
final_embed_dim 768, chan_nheads 16, no cross-task reweighting, conv heads) and configs/nyud/hps.yaml
(ResNet-50, 256-channel heads at stride 4); tasks semseg (40 classes), depth, normals and edge with
the recipes' options and loss weights. Built by ``load_config``, ``build_tasks`` and ``build_model``,
the ViTs' ``img_size`` set to size×size.

Training: one row per model × mode, each in a fresh process (an out-of-memory error, a compilation
failure or a row past ``--row-timeout`` gives an error row; the report is rewritten after every
row). A mode is a precision (``fp32``, or ``bf16``/``fp16`` autocast as ``train.precision``)
followed by ``+``-joined options applied as the Trainer applies them: ``ckpt``
(``train.activation_checkpointing``), ``channels_last`` (``train.channels_last``), ``compile``
(``torch.compile`` of the model, ``train.compile``), ``factored`` (InvPT only: ``model.options.fusion=factored``,
the 1/4 fusion computed at the stages' resolutions; on a GPU the default is the dense convolution; MFU counts
the dense architecture's FLOPs either way). fp32 keeps PyTorch's defaults, as the Trainer does (TF32 off for
matrix products, on for cuDNN convolutions). A step is the Trainer's step without
its bookkeeping: forward under autocast, every task's loss on the final and deep-supervision outputs
(as ``Trainer._task_loss``) weighted by the recipe's task weights and summed, backward, fused AdamW
step (``build_optimizer``, ``train.optimizer=adamw``). The batch (images and targets: piecewise-
constant label maps, their boundaries, smooth depth, unit normals) is generated once on the device.
``warmup`` steps (compilation included) are left out, then ``steps`` steps are timed between
``torch.cuda.synchronize`` calls. Peak memory: ``torch.cuda.max_memory_allocated`` from the model's
arrival on the device (weights, gradients, AdamW state, activations). MFU: training FLOPs per image
(3 × the forward FLOPs of ``scenemtl info``'s ``count_macs`` at size×size and batch 1, on the CPU:
PyTorch's FlopCounterMode, 2 FLOPs per multiply-add of convolutions and matrix products, attention
included, norms and element-wise operations not; a checkpointed step's recomputation is not counted)
× images/s ÷ the GPU's dense bf16 peak, for fp32 rows too.

Evaluation (``--eval``; ``--modes ''`` for it alone): hps and invpt (the recipe's 448×576
``img_size``) in evaluation mode under bf16 autocast over ``eval-images`` (654: NYUD-v2 val)
synthetic images of NYUD's 425×560, padded to the recipe's ``data.eval_pad`` by the package's
evaluation padding, in batches of the recipe's ``data.eval_batch_size``, generated batch by batch
on the device; the package's ``evaluate`` loop updates every task's metric (the edge task's SEISM
boundary metric runs on the CPU, one image at a time, about 0.3 s per image), then each metric is
computed. One warm-up batch (kernels, numba) is left out. The forward-only column runs the same
batches through the model alone.

``--smoke``: the same code on the CPU in under a minute, all rows in one process: 64×64 (evaluation
64×80), batch 1, one warm-up and one timed step, 4 evaluation images, the tiny timm test backbones
(``test_vit``, ``test_resnet``) and narrow decoders, one thread; ``compile`` uses the ``aot_eager``
backend there (graph capture and AOTAutograd as Inductor's, without its code generation).
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: each model's recipe, default training batch, and what --smoke changes (tiny backbone, narrow decoder)
MODELS = {
    "invpt": {
        "config": "configs/nyud/invpt.yaml",
        "batch": 8,
        "vit": True,
        "smoke": [
            "model.backbone.name=test_vit",
            "model.options.layers=null",
            "model.options.embed_dim=32",
            "model.options.pred_channels=16",
        ],
    },
    "taskprompter": {
        "config": "configs/nyud/taskprompter.yaml",
        "batch": 8,
        "vit": True,
        "smoke": [
            "model.backbone.name=test_vit",
            "model.options.layers=null",
            "model.options.embed_dim=32",
            "model.options.final_embed_dim=32",
        ],
    },
    "hps": {
        "config": "configs/nyud/hps.yaml",
        "batch": 16,
        "vit": False,
        "smoke": ["model.backbone.name=test_resnet", "model.options.head_channels=32"],
    },
}
EVAL_MODELS = ("hps", "invpt")
#: mode options → the Trainer's switch
OPTIONS = {
    "ckpt": "train.activation_checkpointing=true",
    "channels_last": "train.channels_last=true",
    "compile": "train.compile=true",
    "factored": "model.options.fusion=factored",
}
#: options only some models have (a mode with one skips the other models)
ONLY = {"factored": ("invpt",)}
PRECISIONS = ("fp32", "bf16", "fp16")
#: NYUD-v2's image size (padded to the recipe's eval_pad, 448×576, for evaluation)
NYUD_IMAGE = (425, 560)
#: dense (no sparsity) bf16 tensor-core FLOP/s by a fragment of the device name, first match (NVIDIA's data sheets)
PEAK_BF16 = (
    ("H100 PCIe", 756e12, "H100 PCIe"),
    ("H100 NVL", 835e12, "H100 NVL"),
    ("H100", 989e12, "H100 SXM"),
    ("H200", 989e12, "H200"),
    ("A100", 312e12, "A100"),
)
SMOKE = {"size": 64, "batch": 1, "steps": 1, "warmup": 1, "eval_images": 4, "eval_pad": (64, 80), "eval_batch": 2}


def parse_mode(mode: str) -> list[str]:
    """``bf16+compile+ckpt`` → the config overrides of that mode (ValueError for an unknown part)."""
    precision, *options = mode.split("+")
    if precision not in PRECISIONS:
        raise ValueError(f"mode '{mode}': starts with one of {', '.join(PRECISIONS)}")
    unknown = [option for option in options if option not in OPTIONS]
    if unknown:
        raise ValueError(f"mode '{mode}': unknown option(s) {unknown}; known: {', '.join(OPTIONS)}")
    return [f"train.precision={precision}", *(OPTIONS[option] for option in options)]


def applies(mode: str, model: str) -> bool:
    """Whether every option of ``mode`` exists for ``model``."""
    return all(model in ONLY.get(option, (model,)) for option in mode.split("+")[1:])


def recipe(name: str, args: argparse.Namespace, overrides: list[str], size: tuple[int, int] | None):
    """The model's NYUD config with random weights, AdamW, ``overrides``, and its ViT sized to ``size`` (None: the recipe's)."""
    from scenemtl.config import load_config

    model = MODELS[name]
    extra = ["model.backbone.weights=null", "train.optimizer=adamw", *overrides]
    if args.smoke:
        extra += model["smoke"]
    if size is not None and model["vit"]:
        extra.append(f"model.options.img_size=[{size[0]},{size[1]}]")
    return load_config(REPO / model["config"], extra)


def synthetic_batch(tasks: dict, count: int, content: tuple[int, int], size: tuple[int, int], device, seed: int) -> dict:
    """``count`` images of ``content`` (H, W) with every task's target, made on ``device``, padded (centred) to
    ``size`` with each task's pad value as evaluation pads: 8×10 regions of random class ids, their boundaries
    as edges (and as the 0/255 label image SEISM's NYUD ground truth reads), smooth depth, smooth unit normals."""
    import torch
    import torch.nn.functional as F

    from scenemtl.data.transforms import pad_sample

    generator = torch.Generator(device=device).manual_seed(seed)

    def smooth(channels: int) -> torch.Tensor:
        field = torch.randn(count, channels, 8, 10, generator=generator, device=device)
        return F.interpolate(field, size=content, mode="bilinear", align_corners=False)

    regions = torch.randint(0, 256, (count, 1, 8, 10), generator=generator, device=device)
    regions = F.interpolate(regions.float(), size=content, mode="nearest").long()[:, 0]
    edges = torch.zeros_like(regions, dtype=torch.bool)
    edges[:, :, :-1] |= regions[:, :, 1:] != regions[:, :, :-1]
    edges[:, :-1, :] |= regions[:, 1:, :] != regions[:, :-1, :]
    sample = {"image": torch.randn(count, 3, *content, generator=generator, device=device)}
    for name, task in tasks.items():
        kind = task.output_kind
        if kind == "classes":
            target = regions % task.out_channels
        elif kind == "probability":
            target = edges[:, None].float()
        elif kind in ("metric_depth", "inverse_depth"):
            target = smooth(1).abs() * 2 + 0.5
        elif kind == "direction":
            target = F.normalize(smooth(3), dim=1)
        else:
            raise ValueError(f"no synthetic target for task '{name}' (output kind '{kind}')")
        problem = task.check_target(target)
        if problem is not None:
            raise ValueError(f"synthetic target: {problem}")
        sample[name] = target
        if task.eval_target == "edge_labels":
            sample["edge_labels"] = edges[:, None].long() * 255
    pad_sample(sample, tasks, size, centre=True)
    sample["meta"] = [{"id": f"synthetic_{seed}_{i}"} for i in range(count)]
    return sample


def build(config, device) -> tuple:
    """The recipe's tasks and model (random weights, seeded) and the row's description of them."""
    import torch

    from scenemtl.engine.builder import build_tasks, dataset_info
    from scenemtl.models import build_model

    torch.manual_seed(config.seed)
    tasks = build_tasks(config, dataset_info(config))
    model = build_model(config.model, tasks)
    row = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "backbone": config.model.backbone.name,
        "device_name": device_name(device),
        "torch": torch.__version__,
    }
    return tasks, model, row


def device_name(device) -> str:
    import platform

    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def peak_memory_gib(device) -> float:
    """Peak allocated GPU memory; on a CPU the process's peak resident set."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def failure(error: BaseException) -> str:
    """One line for the table: the exception type and the first line of its message."""
    traceback.print_exc()
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:160] if lines else ''}"


def task_loss(task, name: str, output, target):
    """``Trainer._task_loss``: the task's loss on the final output plus each deep-supervision stage's (resized to the
    target, times the stage's weight). Restated here: importing the Trainer imports the gradient balancers, which need
    torchjd and its solvers (cvxpy, clarabel), absent from the GPU machine's image."""
    import torch.nn.functional as F

    loss = task.loss(output.final[name], target)
    for key, stage in output.aux.items():
        if name in stage:
            logits = stage[name]
            if logits.shape[-2:] != target.shape[-2:]:
                logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
            loss = loss + output.aux_weights.get(key, 1.0) * task.loss(logits, target)
    return loss


def train_row(name: str, mode: str, batch_size: int, count_flops: bool, args: argparse.Namespace) -> dict:
    """Build one model, count its forward FLOPs (``count_flops``), time training steps in ``mode``."""
    import torch

    from scenemtl.engine.evaluate import autocast
    from scenemtl.engine.info import count_macs
    from scenemtl.engine.optim import build_optimizer

    device = torch.device(args.device)
    size = (args.size, args.size)
    config = recipe(name, args, parse_mode(mode), size)
    cfg = config.train
    tasks, model, row = build(config, device)
    try:
        if count_flops:
            row["forward_flops"] = 2e9 * count_macs(model, size)  # count_macs: multiply-adds ×1e9
        # as Trainer._build_model: checkpointing switched on, then the device, then the memory format
        if cfg.activation_checkpointing:
            model.set_activation_checkpointing(True)
        model = model.to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        net = model
        if cfg.compile:  # on a CPU (--smoke) the graph capture only: Inductor would compile for minutes
            net = torch.compile(model, backend="inductor" if device.type == "cuda" else "aot_eager")
        model.train()
        optimizer = build_optimizer(cfg, model.parameters())
        batch = synthetic_batch(tasks, batch_size, size, size, device, seed=0)
        image = batch["image"].contiguous(memory_format=torch.channels_last) if cfg.channels_last else batch["image"]
        weights = {task: config.tasks[task].weight for task in tasks}

        def step() -> torch.Tensor:
            with autocast(device, cfg.precision):
                output = net(image)
            loss = sum(weights[task] * task_loss(tasks[task], task, output, batch[task]) for task in tasks)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.detach()

        def synchronize() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        start = time.perf_counter()
        for _ in range(args.warmup):
            step()
        synchronize()
        row["warmup_s"] = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        synchronize()
        seconds = time.perf_counter() - start
        row.update(images_per_s=batch_size * args.steps / seconds, peak_gib=peak_memory_gib(device), loss=float(loss))
    except Exception as error:  # out of memory, a compilation failure: this row's error, the others still run
        row["error"] = failure(error)
    return row


def eval_row(name: str, args: argparse.Namespace) -> dict:
    """One NYUD-val-sized evaluation pass (all metrics) and a forward-only pass over the same batches."""
    import torch

    from scenemtl.engine.evaluate import autocast, evaluate

    device = torch.device(args.device)
    pad = SMOKE["eval_pad"] if args.smoke else None
    config = recipe(name, args, ["train.precision=bf16"], pad)
    pad = tuple(config.data.eval_pad) if pad is None else pad
    content = (pad[0] * NYUD_IMAGE[0] // 448, pad[1] * NYUD_IMAGE[1] // 576)
    batch = SMOKE["eval_batch"] if args.smoke else config.data.eval_batch_size
    tasks, model, row = build(config, device)
    row.update(
        {
            "size": pad,
            "content": content,
            "batch": batch,
            "images": args.eval_images,
            "protocol": config.eval.protocol,
        }
    )

    def batches():
        for index, start in enumerate(range(0, args.eval_images, batch)):
            yield synthetic_batch(tasks, min(batch, args.eval_images - start), content, pad, device, seed=1 + index)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    try:
        model = model.to(device).eval()
        evaluate(model, tasks, [synthetic_batch(tasks, batch, content, pad, device, seed=0)], device, "bf16", progress=False)
        synchronize()
        start = time.perf_counter()
        with torch.no_grad(), autocast(device, "bf16"):
            for item in batches():
                model(item["image"])
        synchronize()
        row["forward_s"] = time.perf_counter() - start
        start = time.perf_counter()
        metrics = evaluate(model, tasks, batches(), device, "bf16", progress=False)
        values = {task: metric.compute()[metric.main] for task, metric in metrics.items()}
        synchronize()
        row.update(seconds=time.perf_counter() - start, peak_gib=peak_memory_gib(device), main={t: float(v) for t, v in values.items()})
        row["variants"] = {task: metric.variant for task, metric in metrics.items()}
    except Exception as error:
        row["error"] = failure(error)
    return row


def run_jobs(jobs: list[dict], common: list[str], timeout: float | None) -> list[dict]:
    """Run ``jobs`` (rows) in one fresh process of this file; each row's JSON is a line of its output.

    A row the process did not get to (it crashed, was killed, or ran past ``timeout``) is an error row.
    """
    command = [sys.executable, __file__, "--jobs", json.dumps(jobs), *common]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        stdout, stderr, ending = result.stdout, result.stderr, f"process exited {result.returncode}"
    except subprocess.TimeoutExpired as expired:
        decode = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")  # noqa: E731
        stdout, stderr, ending = decode(expired.stdout), decode(expired.stderr), f"stopped after {timeout:g} s"
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    if "Traceback" in stderr or len(rows) < len(jobs):
        labels = ", ".join(f"{job['model']} {job['mode']}" for job in jobs)
        sys.stderr.write(f"--- {labels}: stderr (last 4000 characters) ---\n{stderr[-4000:]}\n")
    lines = stderr.strip().splitlines()
    rows += [{"error": f"{ending}: {lines[-1][:160] if lines else 'no output'}"}] * (len(jobs) - len(rows))
    return [{**job, **row} for job, row in zip(jobs, rows)]


def peak_flops(args: argparse.Namespace, device: str) -> tuple[float | None, str]:
    """The dense bf16 peak used for MFU and where it came from."""
    if args.peak_tflops is not None:
        return args.peak_tflops * 1e12, f"{args.peak_tflops:g} TFLOP/s (--peak-tflops)"
    for fragment, flops, label in PEAK_BF16:
        if fragment.lower() in device.lower():
            return flops, f"{flops / 1e12:g} TFLOP/s ({label}, dense bf16, from the table in this file)"
    return None, "unknown for this device (give --peak-tflops): MFU left out"


def report(args: argparse.Namespace, train: list[dict], evals: list[dict]) -> str:
    """The Markdown: title, command, device, versions, the training table and the evaluation table."""
    first = next((row for row in train + evals if "device_name" in row), {})
    device = first.get("device_name", "?")
    peak, peak_source = peak_flops(args, device)
    memory = "peak memory GiB" if args.device.startswith("cuda") else "peak memory GiB (CPU: peak RSS)"
    lines = [
        "# GPU speed: InvPT, TaskPrompter (ViT-L/16) and HPS (ResNet-50) on NYUD's tasks" + (" (smoke run)" if args.smoke else ""),
        "",
        f"`{shlex.join(['python', 'benchmarks/gpu_speed.py', *sys.argv[1:]])}`",
        "",
        f"Device: {device}. torch {first.get('torch', '?')}. Peak for MFU: {peak_source}.",
        "",
    ]
    if train:
        lines += [
            f"Training at {args.size}×{args.size}: synthetic batch kept on the device, random weights, AdamW; "
            f"{args.warmup} warm-up step(s) left out, {args.steps} timed. Training FLOPs per image = 3 × forward "
            "(`scenemtl info`'s count, 2 per multiply-add).",
            "",
            f"| model | parameters | mode | batch | img/s | {memory} | TFLOP/s achieved | MFU (of the bf16 dense peak, fp32 rows too) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        counted = {row["model"]: row["forward_flops"] for row in train if row.get("forward_flops")}  # counted once per model
        for row in train:
            name = f"{row['model']} ({row.get('backbone', '?')})"
            parameters = f"{row['parameters'] / 1e6:.1f} M" if "parameters" in row else "?"
            if "error" in row:
                lines.append(f"| {name} | {parameters} | {row['mode']} | {row['batch']} | error: {row['error']} | | | |")
                continue
            flops = counted.get(row["model"])
            achieved = 3 * flops * row["images_per_s"] if flops else None
            tflops = f"{achieved / 1e12:.4g}" if achieved else "?"
            mfu = f"{100 * achieved / peak:.1f} %" if achieved and peak else "n/a"
            lines.append(
                f"| {name} | {parameters} | {row['mode']} | {row['batch']} | {row['images_per_s']:.2f} | "
                f"{row['peak_gib']:.2f} | {tflops} | {mfu} |"
            )
        warmups = [f"{row['model']} {row['mode']} {row['warmup_s']:.0f} s" for row in train if "warmup_s" in row]
        lines += [
            "",
            "Forward GFLOPs per image at this size: "
            + (", ".join(f"{m} {f / 1e9:.4g}" for m, f in counted.items()) or "none counted")
            + ".",
            "Warm-up (compilation included): " + (", ".join(warmups) or "none") + ".",
            *(["On the CPU, `compile` is the `aot_eager` backend (no code generation)."] if args.device == "cpu" else []),
            "",
        ]
    if evals:
        lines += [
            "Evaluation (NYUD-val sized): synthetic images and targets generated on the device batch by batch, bf16 "
            "autocast, the package's `evaluate` loop updating every task's metric (SEISM boundaries on the CPU), then "
            "each metric computed; forward-only: the same batches through the model alone.",
            "",
            "| model | parameters | images | size (content) | batch | seconds | img/s | forward-only s | forward-only img/s | "
            "metrics (random weights) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in evals:
            name = f"{row['model']} ({row.get('backbone', '?')})"
            parameters = f"{row['parameters'] / 1e6:.1f} M" if "parameters" in row else "?"
            if "error" in row:
                lines.append(f"| {name} | {parameters} | {row.get('images', '?')} | | | error: {row['error']} | | | | |")
                continue
            size = f"{row['size'][0]}×{row['size'][1]} ({row['content'][0]}×{row['content'][1]})"
            main = ", ".join(f"{task} {value:.3g}" for task, value in row["main"].items())
            lines.append(
                f"| {name} | {parameters} | {row['images']} | {size} | {row['batch']} | {row['seconds']:.1f} | "
                f"{row['images'] / row['seconds']:.2f} | {row['forward_s']:.2f} | {row['images'] / row['forward_s']:.1f} | {main} |"
            )
        lines.append("")
        for row in evals:
            if "variants" in row:
                variants = "; ".join(f"{task}: {text}" for task, text in row["variants"].items())
                lines.append(f"{row['model']}: protocol {row['protocol']}; {variants}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Every model × mode (and evaluation pass) in its own process; the Markdown is rewritten after each row."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument(
        "--modes", default="fp32,bf16,bf16+factored,bf16+compile+ckpt", help="comma-separated, e.g. bf16+ckpt, bf16+channels_last"
    )
    parser.add_argument("--size", type=int, default=None, help="training size×size (default 512; --smoke 64)")
    parser.add_argument("--batch", type=int, default=None, help="training batch of every model (default 8 for ViT-L, 16 for R50)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=None, help="steps before timing, compilation included (default 3)")
    parser.add_argument("--eval", action="store_true", help="also time a NYUD-val-sized evaluation pass of hps and invpt")
    parser.add_argument("--eval-images", type=int, default=None, help="images of the evaluation pass (default 654)")
    parser.add_argument("--device", default=None, help="default cuda (--smoke: cpu)")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU for MFU (default: from the device name)"
    )
    parser.add_argument("--out", default="benchmarks/results/gpu_speed.md", help="the Markdown report")
    parser.add_argument("--smoke", action="store_true", help="a quick check of the code on the CPU (tiny models, < 1 min)")
    parser.add_argument("--row-timeout", type=float, default=360, help="seconds before a row's process is stopped (an error row)")
    parser.add_argument("--jobs", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    defaults = {"size": 512, "steps": 10, "warmup": 3, "eval_images": 654, "device": "cuda"}
    if args.smoke:
        defaults.update(size=SMOKE["size"], steps=SMOKE["steps"], warmup=SMOKE["warmup"], eval_images=SMOKE["eval_images"], device="cpu")
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.jobs:  # a child process: its rows, one JSON line each
        if args.smoke:
            import torch

            torch.set_num_threads(1)
        for job in json.loads(args.jobs):
            if job["mode"] == "eval":
                row = eval_row(job["model"], args)
            else:
                row = train_row(job["model"], job["mode"], job["batch"], job["count_flops"], args)
            print(json.dumps(row), flush=True)
        return
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    for mode in modes:
        try:
            parse_mode(mode)
        except ValueError as error:
            parser.error(str(error))
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            sys.exit("gpu_speed.py measures a CUDA GPU and none is available here; run it on a GPU machine, or check the code with --smoke")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    common = ["--size", str(args.size), "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
    common += ["--eval-images", str(args.eval_images)] + (["--smoke"] if args.smoke else [])
    # mode by mode (the compiled rows last: a run stopped at its time limit has lost the fewest rows); the
    # report lists them model by model
    jobs = [
        {"model": name, "mode": mode, "batch": args.batch or (SMOKE["batch"] if args.smoke else MODELS[name]["batch"])}
        for mode in modes
        for name in models
        if applies(mode, name)
    ]
    if args.eval:
        jobs += [{"model": name, "mode": "eval", "batch": None} for name in EVAL_MODELS if name in models]
    # a fresh process per row; --smoke runs them all in one (each process spends seconds importing)
    groups = [jobs] if args.smoke else [[job] for job in jobs]
    rows: list[dict] = []
    counted: set[str] = set()  # models whose forward FLOPs a row has counted
    for group in groups:
        for job in group:
            job["count_flops"] = job["mode"] != "eval" and job["model"] not in counted
            if job["count_flops"]:
                counted.add(job["model"])
        for row in run_jobs(group, common, None if args.smoke else args.row_timeout):
            rows.append(row)
            if row["count_flops"] and not row.get("forward_flops"):
                counted.discard(row["model"])  # its count failed: the model's next row counts
            result = f"{row['images_per_s']:.2f} img/s" if "images_per_s" in row else f"{row['seconds']:.1f} s" if "seconds" in row else ""
            print(f"{row['model']} {row['mode']}: {row.get('error', result)}", flush=True)
        train = sorted((r for r in rows if r["mode"] != "eval"), key=lambda r: (models.index(r["model"]), modes.index(r["mode"])))
        out.write_text(report(args, train, [r for r in rows if r["mode"] == "eval"]))
    text = out.read_text()
    print(text)


if __name__ == "__main__":
    main()
