#!/usr/bin/env bash
# device_check.sh: the GPU checks designer-resnet has never had, in one run (at most TOTAL_S=470 s, install included).
#
#   cd <project root> && bash benchmarks/device_check.sh   # writes results under $OUT (default ./device_check_out)
#   DRY=1 bash benchmarks/device_check.sh                  # no GPU: tiny sizes on CPU, checks the plumbing
#   env: OUT (results folder), WORK (scratch), PYTHON (default python3), TOTAL_S (default 470),
#        WHEELS (a folder of wheels for missing runtime packages when the index cannot be reached)
#
# Steps (each has its own time limit; a failed step is logged and the next one runs):
#   0  environment: nvidia-smi, torch/CUDA/cuDNN/NCCL versions
#   1  install: a python3 that already has torch (the GPU image's) is used as it is; the project and any missing
#      runtime package go to $WORK/proj and $WORK/site with pip --target (index, else wheels in $WHEELS; without
#      either, src/ on PYTHONPATH); with no torch at all, a venv gets torch + torchvision from the index first.
#      Missing mlflow (the GPU image has none): Train's component fails at its MLflow copy after training, so the
#      e2e step then runs Train's own loop and model writer from the library and scores that model folder
#      (DRY=1 runs that library fallback as well, so its plumbing is checked where mlflow is installed)
#   2  end to end on CUDA (the library's own CUDA branches, as Train resolves them: compute.Compute auto = bf16
#      autocast + channels_last, cudnn.benchmark, pin_memory, jpeg_decode auto = JPEG files decoded in batches on
#      the GPU): Convert -> Init (default ops) -> Apply (Resize + CenterCrop written as JPEG q95, the flip left to
#      Train) -> ResNet (resnet50) -> Train (2 epochs, last validation batch partial) -> Score -> Evaluate, as
#      `python -m designer_resnet.components.*`; then the same test set scored on the CPU (fp32) and compared
#      with the GPU's scores; and Train again with sync_batch_norm=true (SyncBatchNorm on one process) and
#      jpeg_decode=workers, the other input path (DRY: jpeg_decode=device, so a CPU run covers both paths too)
#   4  NCCL / DDP / SyncBatchNorm probe on ONE rank. Two NCCL ranks cannot share one GPU (NCCL refuses a
#      duplicate GPU), so the 2-process DDP test stays where it runs today (CPU, gloo). On one rank this
#      checks: init_process_group("nccl", device_id=...), DDP(device_ids=[0]) around a channels_last
#      SyncBatchNorm resnet50, bf16 steps through the library's train_one_epoch (a loader of generated JPEGs
#      decoded on the device), buffer broadcast, and the SyncBatchNorm CUDA kernels
#      (batch_norm_stats/gather/elemt/backward) on bf16 channels_last input
#   3  throughput, resnet50 224x224 bf16 channels_last, on generated ImageNet-like JPEGs (~500x375, q90):
#        plain              : benchmarks/train_throughput.py's plain_loop on in-memory tensors (the GPU ceiling),
#                             batch 256 (and batch 16 = Train's default, 64)
#        ours_float         : the old per-image float items, ImageDataset(uint8=False): RandomResizedCrop 224 +
#                             flip + ToTensor + Normalize in the loader workers, for comparison
#        ours               : the default: uint8 items from the workers, normalised per batch on the GPU
#                             (jpeg_decode=workers)
#        ours_device_decode : ImageDataset(decode=decode_plan("device", ...)): the workers read JPEG bytes and draw
#                             crop and flips; device_batch decodes the batch with nvJPEG and crops/flips/normalises
#                             on the GPU (the library's own decode path; this script's hand-written nvJPEG loop,
#                             the design it came from, is gone)
#      each ours_* through make_loaders (default workers: loader_workers = vCPUs - 2, fewer when /dev/shm is short)
#      + train_one_epoch, then one pass of its input side alone (loader + to_device, no network): whether the
#      input pipeline could feed the GPU, and the main process's CPU ms per image (for the decode path: low when
#      nvJPEG uses the hardware decoder, about a CPU decode's Huffman share on its hybrid backend)
#      then benchmarks/train_throughput.py itself (--model resnet50 --size 224: its own PNG images, ours vs plain)
#   Order of running: 0, 1, 2, 3, 4, then benchmarks/train_throughput.py (only with mlflow: it calls train()).
#   $OUT gets 4 files: summary.txt (the table, printed last), env.txt, results.json, logs.tar.gz.
set -u -o pipefail

ROOT=$(pwd)
OUT=${OUT:-$ROOT/device_check_out}
WORK=${WORK:-$(mktemp -d /tmp/device_check.XXXXXX)}
DRY=${DRY:-0}
export DRY
PY=${PYTHON:-python3}
TOTAL_S=${TOTAL_S:-$([ "${DRY:-0}" = 1 ] && echo 1500 || echo 470)}   # whole run, install included (8 min budget)
WHEELS=${WHEELS:-$ROOT/.whl}
STEPS=$WORK/steps          # per-step logs and JSON; $OUT keeps 4 files: summary.txt, env.txt, results.json, logs.tar.gz
mkdir -p "$OUT" "$WORK" "$STEPS"
: >"$OUT/summary.txt"
START=$SECONDS
log() { echo "[$(date +%H:%M:%S) +$((SECONDS - START))s] $*" | tee -a "$OUT/summary.txt"; }
# run_step NAME SECONDS CMD...: a step with a time limit; output to $OUT/NAME.log; never stops the script
run_step() {
    local name=$1 limit=$2; shift 2
    local left=$((TOTAL_S - (SECONDS - START)))
    if [ "$left" -lt 30 ]; then log "step $name: skipped (total budget ${TOTAL_S}s spent)"; return 0; fi
    [ "$limit" -gt "$left" ] && limit=$left
    log "step $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" >"$STEPS/$name.log" 2>&1
    local rc=$?
    if [ $rc -eq 0 ]; then log "step $name: ok"; else log "step $name: FAILED rc=$rc (tail of its log:)"; tail -n 15 "$STEPS/$name.log" | sed 's/^/    /' | tee -a "$OUT/summary.txt"; fi
    consolidate
    return 0
}
# After every step: the step JSONs merged into $OUT/results.json, the logs into $OUT/logs.tar.gz
consolidate() {
    "${VPY:-$PY}" - "$STEPS" "$OUT/results.json" <<'EOF2' 2>/dev/null
import json, sys
from pathlib import Path
steps = Path(sys.argv[1])
merged = {f.stem: json.loads(f.read_text()) for f in sorted(steps.glob("*.json"))}
Path(sys.argv[2]).write_text(json.dumps(merged, indent=1, default=str))
EOF2
    tar -czf "$OUT/logs.tar.gz" -C "$STEPS" . 2>/dev/null
}

if [ ! -f pyproject.toml ] || [ ! -d src/designer_resnet ]; then
    echo "run from the designer-resnet project root" >&2; exit 2
fi
if [ "$DRY" = 1 ]; then
    SIZES="--images 64 --epochs 2 --batch 8 --model resnet18 --size 64 --e2e-images 48"
else
    SIZES="--images 4096 --epochs 3 --batch 256 --model resnet50 --size 224 --e2e-images 256"
fi

# ---------------------------------------------------------------- 0. environment
log "root $ROOT  out $OUT  work $WORK  dry=$DRY"
{ nvidia-smi 2>&1 || echo "nvidia-smi: not available"; nproc; free -g; } >"$OUT/env.txt"

# ---------------------------------------------------------------- 1. install
install_project() {
    # A python that already has torch (the GPU image's, or DRY=1 here) is used as it is, nothing replaced:
    # the project and any missing runtime package go to $WORK/site (pip --target) on PYTHONPATH.
    # Otherwise: a venv with torch + torchvision from the index (a few GB, minutes).
    if "$PY" -c "import torch, torchvision" 2>/dev/null; then
        VPY=$PY
    else
        "$PY" -m venv "$WORK/venv" && VPY="$WORK/venv/bin/python" || return 1
        "$VPY" -m pip install -q --retries 1 --timeout 20 torch torchvision || return 1
    fi
    echo "python: $VPY"
    "$VPY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    # The project: pure Python. pip needs the build backend (setuptools>=77) from the index; offline, src/ is used.
    if timeout 120 "$VPY" -m pip install -q --retries 0 --timeout 10 --no-deps --target "$WORK/proj" . ; then
        echo "project installed to $WORK/proj"
    else
        echo "pip could not build the project (offline?): using PYTHONPATH=src"
    fi
    # Runtime dependencies that are missing (never torch/torchvision: the CUDA build in place is kept).
    local missing
    missing=$("$VPY" - <<'EOF2'
import importlib.util
mods = {"PIL": "pillow", "yaml": "pyyaml", "pandas": "pandas", "pyarrow": "pyarrow", "sklearn": "scikit-learn",
        "numpy": "numpy", "tqdm": "tqdm", "matplotlib": "matplotlib", "mlflow": "mlflow"}
print(" ".join(p for m, p in mods.items() if importlib.util.find_spec(m) is None))
EOF2
)
    if [ -n "$missing" ]; then
        echo "missing runtime packages: $missing"
        local pins="" p
        for p in $missing; do pins="$pins $(grep -i "^$p==" environments/requirements.txt || echo "$p")"; done
        timeout 240 "$VPY" -m pip install -q --retries 0 --timeout 10 --target "$WORK/site" $pins \
            || { [ -d "$WHEELS" ] && "$VPY" -m pip install -q --no-index --find-links "$WHEELS" --target "$WORK/site" $missing; } \
            || echo "could not install: $missing (steps that need them say so)"
    fi
    echo "VPY=$VPY" >"$WORK/vpy.env"
    return 0
}
log "step install"
install_project >"$STEPS/install.log" 2>&1 || log "install failed: see install.log in logs.tar.gz"
VPY=$PY
[ -f "$WORK/vpy.env" ] && . "$WORK/vpy.env"
# The installed project ($WORK/proj) or src/; benchmarks/ for train_throughput's helpers. Missing runtime packages
# ($WORK/site) go AFTER the interpreter's own site-packages (a sitecustomize adds them), so they never shadow
# the torch/numpy already there.
if [ -d "$WORK/proj/designer_resnet" ]; then PROJ="$WORK/proj"; else PROJ="$ROOT/src"; fi
mkdir -p "$WORK/pth"
printf 'import site\nsite.addsitedir(%s)\n' "'$WORK/site'" >"$WORK/pth/sitecustomize.py"
export PYTHONPATH="$PROJ:$ROOT/benchmarks:$WORK/pth${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$VPY" - 2>&1 <<'EOF' | tee -a "$OUT/summary.txt"
import importlib.util, torch
print("python env: torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "| missing:", [m for m in ("mlflow", "pandas", "pyarrow", "sklearn", "matplotlib", "yaml", "tqdm")
                     if importlib.util.find_spec(m) is None] or "none")
if torch.cuda.is_available():
    print("gpu:", torch.cuda.get_device_name(), "cc", torch.cuda.get_device_capability(), "cudnn",
          torch.backends.cudnn.version(), "nccl", torch.cuda.nccl.version(), "bf16", torch.cuda.is_bf16_supported())
EOF

# ---------------------------------------------------------------- the Python side, written once
cat >"$WORK/check.py" <<'PYEOF'
"""Steps 2-4 of device_check.sh; `python check.py STEP --out DIR [sizes]`."""
import argparse, gc, json, math, os, subprocess, sys, time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

CUDA = torch.cuda.is_available()
DRY = os.environ.get("DRY") == "1"  # tiny sizes on CPU: also runs the library fallbacks


# ---- ImageNet-like JPEGs (1/f colour noise, gradient, shapes, sensor noise; ~500x375, q90, 4:2:0) ----
def _pink(rng, h, w, alpha):
    fy = np.fft.fftfreq(h)[:, None]; fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy); f[0, 0] = 1.0
    amp = 1.0 / f ** alpha; amp[0, 0] = 0.0
    field = np.fft.irfft2(amp * np.exp(1j * rng.uniform(0, 2 * np.pi, amp.shape)), s=(h, w))
    return (field - field.mean()) / (field.std() + 1e-9)


def _one_jpeg(args):
    path, seed, w, h = args
    rng = np.random.default_rng(seed)
    y = _pink(rng, h, w, 1.0) * 76
    cb, cr = _pink(rng, h, w, 1.4) * 14, _pink(rng, h, w, 1.4) * 14
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    t = np.linspace(0, 1, w)[None, :, None] * np.ones((h, 1, 1))
    rgb = c0 * (1 - t) + c1 * t + np.stack([y + 1.402 * cr, y - 0.344 * cb - 0.714 * cr, y + 1.772 * cb], -1)
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 9)):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        box = [x0, y0, x0 + rng.uniform(0.1, 0.6) * w, y0 + rng.uniform(0.1, 0.6) * h]
        (d.ellipse if rng.integers(0, 2) else d.rectangle)(box, fill=tuple(int(v) for v in rng.uniform(0, 255, 3)))
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.2))))
    a = np.asarray(img, np.float32) + _pink(rng, h, w, 0.8)[..., None] * 20 + rng.normal(0, 5, (h, w, 3))
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_jpegs(root: Path, count: int, classes: int = 10):
    sizes = [(500, 375), (375, 500), (500, 333), (500, 400)]
    jobs = []
    for i in range(count):
        folder = root / f"c{i % classes}"; folder.mkdir(parents=True, exist_ok=True)
        w, h = sizes[i % 7 % 4]
        jobs.append((folder / f"{i:05d}.jpg", i, w, h))
    with Pool(max(1, (os.cpu_count() or 2) - 1)) as pool:
        pool.map(_one_jpeg, jobs, chunksize=8)


def sh(cmd, log, env=None):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log.append({"cmd": " ".join(map(str, cmd[2:4])), "rc": p.returncode, "s": round(time.perf_counter() - t0, 1),
                "tail": p.stdout[-1500:]})
    print(f"  rc={p.returncode} {time.perf_counter() - t0:5.1f}s  {' '.join(map(str, cmd[1:3]))}", flush=True)
    if p.returncode:
        print(p.stdout[-3000:], flush=True)
    return p.returncode


# ---- step 2: end to end through the components ----
def e2e(a):
    w = Path(a.work) / "e2e"; w.mkdir(parents=True, exist_ok=True)
    log = []
    res = {"cuda": CUDA, "log": log}
    save = lambda: Path(a.out, "e2e.json").write_text(json.dumps(res, indent=1, default=str))
    make_jpegs(w / "raw_train", a.e2e_images, classes=4)
    make_jpegs(w / "raw_test", max(16, a.e2e_images // 4), classes=4)
    py, m = sys.executable, "designer_resnet.components."
    run = lambda *c, env=None: sh([py, "-m", m + c[0], *c[1:]], log, env)
    ok = run("convert_to_image_directory", "--input_path", w / "raw_train", "--output_path", w / "train_dir") == 0
    ok &= run("convert_to_image_directory", "--input_path", w / "raw_test", "--output_path", w / "test_dir") == 0
    ok &= run("init_image_transformation", "--output_path", w / "tf") == 0          # default ops: Resize 256, CenterCrop 224, flip
    # For training: Resize + CenterCrop written (JPEG q95), the flip left to Train (decoded on the GPU: jpeg_decode auto)
    ok &= run("apply_image_transformation", "--input_transformation_path", w / "tf", "--input_image_path",
              w / "train_dir", "--mode", "For training", "--output_path", w / "train_tf") == 0
    ok &= run("apply_image_transformation", "--input_transformation_path", w / "tf", "--input_image_path",
              w / "test_dir", "--mode", "For inference", "--output_path", w / "test_tf") == 0
    ok &= run("split_image_directory", "--input_path", w / "train_tf", "--fraction", "0.8",
              "--output_path1", w / "tr", "--output_path2", w / "va") == 0
    ok &= run("resnet", "--model_name", a.model, "--pretrained", "false", "--output_path", w / "untrained") == 0
    res["setup_ok"] = bool(ok)
    res["train_files"] = sorted({f.suffix for f in (w / "tr").rglob("*") if f.suffix in (".jpg", ".png")})
    save()
    # batch 32: the validation shard ends in a partial batch (a second shape for cudnn.benchmark)
    rc = run("train_pytorch_model", "--untrained_model", w / "untrained", "--training_data", w / "tr",
             "--validation_data", w / "va", "--epochs", "2", "--batch_size", "32", "--learning_rate", "0.01",
             "--trained_model", w / "model")
    res["train_rc"] = rc; res["metrics"] = read_metrics(w / "model"); save()
    model = w / "model"
    # e.g. mlflow missing on the GPU image: Train's own loop and model writer, minus the MLflow copy.
    # DRY runs it whatever Train did, and scores its model: the one path only this script takes.
    if rc != 0 or DRY:
        res["library_fallback"] = library_e2e(w, a, w / "model_lib"); save()
        model = w / "model_lib"
    if (model / "_meta.yaml").exists():
        res["scored_model"] = model.name
        res["score_gpu_rc"] = run("score_image_model", "--trained_model", model, "--dataset", w / "test_tf",
                                  "--scored_dataset", w / "scored_gpu")
        cpu_env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
        res["score_cpu_rc"] = run("score_image_model", "--trained_model", model, "--dataset", w / "test_tf",
                                  "--scored_dataset", w / "scored_cpu", env=cpu_env)
        res["evaluate_rc"] = run("evaluate_model", "--scored_dataset", w / "scored_gpu",
                                 "--evaluation_results", w / "eval")
        try:
            res["gpu_vs_cpu"] = compare_scores(w / "scored_gpu", w / "scored_cpu")
        except Exception as exc:
            res["gpu_vs_cpu"] = f"{exc.__class__.__name__}: {exc}"
        save()
    # The other input path than the first Train's: workers decode on a GPU; on a CPU (DRY) the device-decode path.
    res["syncbn_jpeg_decode"] = "workers" if CUDA else "device"
    res["train_syncbn_rc"] = run("train_pytorch_model", "--untrained_model", w / "untrained", "--training_data",
                                 w / "tr", "--validation_data", w / "va", "--epochs", "1", "--batch_size", "32",
                                 "--sync_batch_norm", "true", "--jpeg_decode", res["syncbn_jpeg_decode"],
                                 "--trained_model", w / "model_syncbn")
    if res["train_syncbn_rc"] != 0 or DRY:
        res["syncbn_library"] = library_e2e(w, a, None, sync_bn=True, epochs=1)
    res.update(e2e_failures(res))
    save()
    return res


def e2e_failures(res):
    """{"error": ...} naming what failed: a Train component's failure counts only when its library run failed too."""
    failed = [] if res.get("setup_ok") else ["convert/init/apply/split/resnet"]
    failed += [k for k in ("score_gpu_rc", "score_cpu_rc", "evaluate_rc") if res.get(k) != 0]
    for rc, fallback in (("train_rc", "library_fallback"), ("train_syncbn_rc", "syncbn_library")):
        if isinstance(res.get(fallback), str) or (res.get(rc) != 0 and fallback not in res):
            failed.append(fallback if fallback in res else rc)
    if isinstance(res.get("gpu_vs_cpu"), str):
        failed.append("gpu_vs_cpu")
    return {"error": "failed: " + ", ".join(failed)} if failed else {}


def compare_scores(gpu_dir, cpu_dir):
    import pandas as pd
    read = lambda d: pd.read_parquet(next(Path(d).glob("*.parquet")))
    g, c = read(gpu_dir), read(cpu_dir)
    cols = [k for k in g.columns if k.startswith("Scored Probabilities_")]
    pg, pc = g[cols].to_numpy(), c[cols].to_numpy()
    return {"rows": len(g), "argmax_agree": float((pg.argmax(1) == pc.argmax(1)).mean()),
            "max_abs_prob_diff": float(np.abs(pg - pc).max()), "nan_gpu": int(np.isnan(pg).sum())}


def read_metrics(model_dir):
    f = Path(model_dir) / "training_metrics.csv"
    return f.read_text()[-800:] if f.exists() else None


def library_e2e(w, a, out_dir, sync_bn=False, epochs=2):
    """Train's CUDA branches through the library (set-up, train_one_epoch, evaluate) and, when out_dir is
    given, its model writer (write_trained) without the MLflow copy."""
    import copy
    from designer_resnet.directories import StagedOutput
    from designer_resnet.models.model_directory import write_trained
    from designer_resnet.training.train import TrainConfig
    try:
        r = lib_setup(w / "untrained", w / "tr", w / "va", TrainConfig(epochs=epochs, batch_size=32, learning_rate=0.01),
                      sync_bn=sync_bn)
        out = {"history": lib_epochs(r, epochs), "workers": r["workers"], "decode": r["decode"],
               "compute": r["compute"].describe(),
               "global_bn_layers": global_bn_layers(r["model"])}
        if out_dir is not None:
            # Contiguous on CPU whatever the training layout, as training/train.py _write_model does
            final = copy.deepcopy(r["model"]).to("cpu", memory_format=torch.contiguous_format)
            with StagedOutput(out_dir, output_name="trained_model") as stage:
                write_trained(stage.path, final, r["untrained"], r["categories"], r["preprocess"],
                              extra={"note": "device_check library fallback"})
            out["model"] = str(out_dir)
        return out
    except Exception as exc:
        import traceback; traceback.print_exc()
        return f"{exc.__class__.__name__}: {exc}"


def global_bn_layers(model):
    """BatchNorm layers over the global batch: torch's SyncBatchNorm on CUDA, the library's GlobalBatchNorm on a CPU."""
    return sum(type(m).__name__ in ("SyncBatchNorm", "GlobalBatchNorm") for m in model.modules())


# ---- the library's Train set-up and epochs (training/train.py _train and _loaders, minus writing the model) ----
def lib_setup(untrained_dir, train_dir, valid_dir, cfg, ops=None, workers=None, sync_bn=False, uint8=True):
    """`cfg.jpeg_decode` and `uint8` pick the input path: uint8=False is the old per-image float items (no decode plan)."""
    from designer_resnet.compute import Compute
    from designer_resnet.directories.image_directory import ImageDirectory
    from designer_resnet.models.model_directory import read_untrained
    from designer_resnet.models.registry import IMAGENET_MEAN, IMAGENET_STD
    from designer_resnet.training.batch_norm import synchronise_batch_norm
    from designer_resnet.training.dataset import ImageDataset, decode_plan, transforms_for
    from designer_resnet.training.distributed import DistInfo
    from designer_resnet.training.loaders import make_loaders
    from designer_resnet.training.train import lr_lambda, seed_everything
    info = DistInfo()
    device = torch.device("cuda", 0) if CUDA else torch.device("cpu")
    if CUDA:
        torch.backends.cudnn.benchmark = True
    compute = Compute.resolve(device, precision=cfg.precision, memory_format=cfg.memory_format, compile=False)
    tr = ImageDirectory.load(train_dir, input_name="training_data")
    va = ImageDirectory.load(valid_dir, input_name="validation_data")
    idx = {c: i for i, c in enumerate(tr.categories)}
    # Train's own op lists (and the model's pre-processing), unless the caller gives its two
    t = transforms_for(tr, va, IMAGENET_MEAN, IMAGENET_STD) if ops is None else None
    train_ops, valid_ops, raw = (t.train_ops, t.valid_ops, t.raw_size) if ops is None else (ops[0], ops[1], None)
    seed_everything(cfg.random_seed)
    untrained = read_untrained(untrained_dir)
    model = untrained.build(len(tr.categories))
    if sync_bn:
        model = synchronise_batch_norm(model, device)
    model = compute.place(model)
    decode = decode_plan(cfg.jpeg_decode, train_ops, tr, device) if uint8 else None
    ts = ImageDataset(tr, train_ops, idx, raw, uint8=uint8, decode=decode)
    vs = ImageDataset(va, valid_ops, idx, raw, uint8=uint8)
    tl, sampler, vl = make_loaders(ts, vs, batch_size=cfg.batch_size, workers=workers, seed=cfg.random_seed,
                                   info=info, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=0.9, nesterov=True, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(0, cfg.epochs * len(tl)))
    return dict(info=info, compute=compute, model=model, ts=ts, sampler=sampler, tl=tl, vl=vl, opt=opt, sched=sched,
                cfg=cfg, workers=tl.num_workers, decode="device" if decode is not None else "workers",
                untrained=untrained, categories=tr.categories, preprocess=t and t.preprocess)


def seed_epoch(r, e):
    """training/train.py _seed_epoch for seed 1, rank 0."""
    from designer_resnet.training.loaders import STREAM_AUGMENT, STREAM_PROCESS, epoch_seed
    torch.manual_seed(epoch_seed(1, e, 0, STREAM_PROCESS))
    r["ts"].set_epoch_seed(epoch_seed(1, e, 0, STREAM_AUGMENT)); r["sampler"].set_epoch(e)


def lib_epochs(r, epochs, evaluate_too=True):
    from designer_resnet.training.train import evaluate, train_one_epoch
    hist = []
    for e in range(1, epochs + 1):
        seed_epoch(r, e)
        # No sync around it: train_one_epoch never waits for the device inside a step; its img/s is timed up to
        # the epoch's one transfer of totals, which waits for the last step. The main process's CPU time per
        # image (its Python loop, launches, pinning thread; not the workers') is read the same way.
        c0 = time.process_time()
        loss, err, speed = train_one_epoch(r["model"], r["tl"], r["opt"], r["sched"], r["compute"], r["cfg"], e,
                                           r["info"])
        h = {"epoch": e, "loss": loss, "train_error": err, "img_s": speed,
             "main_cpu_ms_per_img": 1000 * (time.process_time() - c0) / max(1, len(r["tl"]) * r["tl"].batch_size)}
        if evaluate_too:
            h["valid_loss"], h["top1"], _ = evaluate(r["model"], r["vl"], r["compute"], r["info"])
        hist.append(h)
        print(f"    epoch {e}: {speed:8.1f} img/s  loss {loss:.3f}", flush=True)
    return hist


def input_only(r, epoch):
    """One epoch of the training loader through to_device alone (no network): images/s the input side delivers,
    and the main process's CPU ms per image (on the decode path: the decoder's share on the host)."""
    from designer_resnet.training.dataset import batches
    from designer_resnet.training.train import to_device
    seed_epoch(r, epoch)
    n = 0
    sync(); t0 = time.perf_counter(); c0 = time.process_time()
    for images, targets in batches(r["tl"]):
        images, targets = to_device(images, targets, r["tl"].dataset, r["compute"])
        n += targets.numel()
    sync()
    el = time.perf_counter() - t0
    return {"img_s": n / el, "main_cpu_ms_per_img": 1000 * (time.process_time() - c0) / max(n, 1)}


# ---- step 4: NCCL / DDP / SyncBatchNorm on one rank ----
def probe_loader(a, device):
    """64 generated JPEGs, RandomResizedCrop + flip, decoded on the device (decode_plan "device"), batches of 16."""
    from torch.utils.data import DataLoader
    from designer_resnet.data.convert import convert_to_image_directory
    from designer_resnet.directories.image_directory import ImageDirectory
    from designer_resnet.models.registry import IMAGENET_MEAN, IMAGENET_STD
    from designer_resnet.training.dataset import ImageDataset, collate, decode_plan
    from designer_resnet.transforms.ops import designer_ops, validate_ops
    w = Path(a.work) / "nccl"; w.mkdir(parents=True, exist_ok=True)
    make_jpegs(w / "raw", 64)
    convert_to_image_directory(w / "raw", w / "jpegs")
    d = ImageDirectory.load(w / "jpegs")
    ops = validate_ops(designer_ops(resize=False, center_crop=False, random_resized_crop=True,
                                    random_resized_crop_size=a.size, random_horizontal_flip=True))
    ops += [["Normalize", {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}]]
    ds = ImageDataset(d, ops, {c: i for i, c in enumerate(d.categories)}, decode=decode_plan("device", ops, d, device))
    ds.set_epoch_seed(1)
    return DataLoader(ds, 16, drop_last=True, collate_fn=collate), ds.decode is not None


def nccl_probe(a):
    import torch.distributed as dist
    from torch import nn
    from torch.nn.modules._functions import SyncBatchNorm as SyncBNFunction
    from designer_resnet.compute import Compute
    from designer_resnet.models.registry import build_model
    from designer_resnet.training.batch_norm import synchronise_batch_norm
    from designer_resnet.training.distributed import DistInfo
    from designer_resnet.training.train import TrainConfig, train_one_epoch
    res = {"backend": "nccl" if CUDA else "gloo (no CUDA: plumbing only)"}
    dev = torch.device("cuda", 0) if CUDA else torch.device("cpu")
    loader, res["decode_on_device"] = probe_loader(a, dev)  # before the process group: make_jpegs forks
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1"); os.environ.setdefault("MASTER_PORT", "29511")
    if CUDA:
        torch.cuda.set_device(0)
        dist.init_process_group("nccl", rank=0, world_size=1, device_id=dev)
    else:
        dist.init_process_group("gloo", rank=0, world_size=1)
    compute = Compute.resolve(dev, precision="auto", memory_format="auto", compile=False)
    res["compute"] = compute.describe()
    model = compute.place(synchronise_batch_norm(build_model(a.model, 10), dev))
    res["global_bn_layers"] = global_bn_layers(model)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[0] if CUDA else None)
    info = DistInfo(0, 1, 0, 1)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    loss, err, speed = train_one_epoch(ddp, loader, opt, sched, compute, TrainConfig(print_frequency=10**6), 1, info)
    res["ddp_steps"] = {"loss": loss, "finite": math.isfinite(loss)}
    res["grads_channels_last"] = all(p.grad is None or p.grad.is_contiguous(memory_format=torch.channels_last)
                                     for p in model.parameters() if p.dim() == 4) if compute.channels_last else "n/a"
    for b in model.buffers():
        dist.broadcast(b, 0)
    t = torch.tensor([1.0, 2.0], dtype=torch.float64, device=dev); dist.all_reduce(t)
    res["all_reduce_fp64"] = t.tolist()
    # SyncBatchNorm's CUDA kernels (used only when world_size > 1 in nn.SyncBatchNorm) on bf16 channels_last
    for dtype in ((torch.float32, torch.bfloat16) if CUDA else ()):
        inp = torch.randn(32, 64, 28, 28, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
        inp.requires_grad_(True)
        wgt = torch.ones(64, device=dev, requires_grad=True); bias = torch.zeros(64, device=dev, requires_grad=True)
        rm, rv = torch.zeros(64, device=dev), torch.ones(64, device=dev)
        try:
            out = SyncBNFunction.apply(inp, wgt, bias, rm, rv, 1e-5, 0.1, dist.group.WORLD, 1)
            out.float().square().mean().backward()
            ref = torch.nn.functional.batch_norm(inp.detach().float(), None, None, wgt.detach(), bias.detach(), True)
            res[f"syncbn_kernels_{dtype}"] = {"max_abs_err": float((out.float() - ref).abs().max()),
                                             "grad_finite": bool(torch.isfinite(inp.grad).all())}
        except Exception as exc:
            res[f"syncbn_kernels_{dtype}"] = f"{exc.__class__.__name__}: {exc}"
    if not CUDA:
        res["syncbn_kernels"] = "skipped: no CUDA"
    dist.destroy_process_group()
    res["two_ranks_one_gpu"] = "not run: NCCL refuses two ranks on one GPU; the 2-process DDP test runs on CPU/gloo"
    return res


# ---- step 3: throughput ----
def sync():
    if CUDA:
        torch.cuda.synchronize()


def plain(a, x, y, batch, epochs, compute):
    import inspect
    from train_throughput import plain_loop   # benchmarks/train_throughput.py
    # Its last argument was the device before the Compute API; either way it syncs only at epoch edges.
    last = list(inspect.signature(plain_loop).parameters)[-1]
    return plain_loop(a.model, x, y, epochs, batch, compute if last == "compute" else compute.device)


def throughput(a):
    from designer_resnet.compute import Compute
    from designer_resnet.data.convert import convert_to_image_directory
    from designer_resnet.directories.image_directory import ImageDirectory
    from designer_resnet.models.create import create_untrained_model
    from designer_resnet.models.registry import IMAGENET_MEAN, IMAGENET_STD
    from designer_resnet.parallel import loader_workers
    from designer_resnet.training.dataset import ImageDataset
    from designer_resnet.training.train import TrainConfig
    from designer_resnet.transforms.ops import designer_ops, validate_ops
    w = Path(a.work) / "tp"; w.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter(); make_jpegs(w / "raw", a.images)
    convert_to_image_directory(w / "raw", w / "jpegs")
    create_untrained_model(w / "untrained", {"model_name": a.model, "pretrained": False})
    res = {"jpegs_s": round(time.perf_counter() - t0, 1), "model": a.model, "batch": a.batch, "images": a.images,
           "epochs": a.epochs, "cpus": os.cpu_count(), "loader_workers": loader_workers(CUDA, 1)}
    compute = Compute.resolve(torch.device("cuda" if CUDA else "cpu"), precision="auto", memory_format="auto")
    res["compute"] = compute.describe()
    norm = [["Normalize", {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}]]
    rrc = validate_ops(designer_ops(resize=False, center_crop=False, random_resized_crop=True,
                                    random_resized_crop_size=a.size, random_horizontal_flip=True))
    center = validate_ops(designer_ops(size=a.size * 256 // 224, crop_size=a.size, random_horizontal_flip=False))
    # plain: in-memory tensors (decoded once, centre crops, float items), the GPU ceiling
    d = ImageDirectory.load(w / "jpegs")
    ds = ImageDataset(d, center + norm, {c: i for i, c in enumerate(d.categories)}, uint8=False)
    x = torch.stack([ds[i][0] for i in range(len(ds))]); y = torch.tensor(ds.targets)
    for b in ([16, 64, a.batch] if CUDA else [a.batch]):
        res[f"plain_b{b}"] = plain(a, x, y, b, a.epochs, compute)
        print(f"  plain batch {b}: {res[f'plain_b{b}']:8.1f} img/s", flush=True)
    del x
    variants = (("ours_float", "workers", False), ("ours", "workers", True), ("ours_device_decode", "device", True))
    for tag, jpeg_decode, uint8 in variants:
        # 0.1 at batch 256, scaled linearly: DRY's batch 8 at 0.1 diverges, and CPU steps on denormal weights
        # run many times slower, which swamped the input paths' differences
        cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch, learning_rate=0.1 * a.batch / 256,
                          print_frequency=10**6, jpeg_decode=jpeg_decode)
        try:
            r = lib_setup(w / "untrained", w / "jpegs", w / "jpegs", cfg, ops=(rrc + norm, center + norm), uint8=uint8)
            hist = lib_epochs(r, a.epochs, evaluate_too=False)
            warm = hist[1:] or hist  # the first epoch starts the workers and cuDNN's search
            res[tag] = {"workers": r["workers"], "decode": r["decode"],
                        "img_s": float(np.median([h["img_s"] for h in warm])),
                        "main_cpu_ms_per_img": float(np.median([h["main_cpu_ms_per_img"] for h in warm])),
                        "input_only": input_only(r, a.epochs + 1)}
            del r
            gc.collect()  # the persistent loader workers go before the next variant starts its own
        except Exception as exc:
            import traceback; traceback.print_exc()
            res[tag] = f"{exc.__class__.__name__}: {exc}"
        print(f"  {tag}: {res[tag]}", flush=True)
        torch.cuda.empty_cache() if CUDA else None
    failed = [tag for tag, _, _ in variants if isinstance(res[tag], str)]
    if failed:
        res["error"] = "failed: " + ", ".join(failed)
    return res


def main():
    p = argparse.ArgumentParser()
    p.add_argument("step"); p.add_argument("--out", required=True); p.add_argument("--work", required=True)
    p.add_argument("--images", type=int, default=2048); p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=256); p.add_argument("--model", default="resnet50")
    p.add_argument("--size", type=int, default=224); p.add_argument("--e2e-images", type=int, default=256)
    a = p.parse_args()
    fn = {"e2e": e2e, "nccl": nccl_probe, "throughput": throughput}[a.step]
    t0 = time.perf_counter()
    try:
        res = fn(a)
    except Exception as exc:
        import traceback; traceback.print_exc()
        res = {"error": f"{exc.__class__.__name__}: {exc}"}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    Path(a.out, f"{a.step}.json").write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps({k: v for k, v in res.items() if k != "log"}, default=str)[:3000])
    sys.exit(1 if "error" in res else 0)


if __name__ == "__main__":
    main()
PYEOF

# ---------------------------------------------------------------- 2-4
# Order: what matters most first; each limit is also capped by what is left of TOTAL_S.
run_step e2e "$([ "$DRY" = 1 ] && echo 600 || echo 170)" "$VPY" "$WORK/check.py" e2e --out "$STEPS" --work "$WORK" $SIZES
run_step throughput "$([ "$DRY" = 1 ] && echo 400 || echo 170)" "$VPY" "$WORK/check.py" throughput --out "$STEPS" --work "$WORK" $SIZES
run_step nccl 60 "$VPY" "$WORK/check.py" nccl --out "$STEPS" --work "$WORK" $SIZES
if "$VPY" -c "import mlflow" 2>/dev/null; then
    if [ "$DRY" = 1 ]; then BENCH="--model resnet18 --size 32 --images 64 --batch-size 16 --epochs 2 --repeats 1"
    else BENCH="--model resnet50 --size 224 --images 2048 --batch-size 256 --epochs 3 --repeats 1"; fi
    run_step bench_train_throughput 120 "$VPY" benchmarks/train_throughput.py $BENCH
else
    log "step bench_train_throughput: skipped (mlflow missing: train() writes an MLflow model)"
fi

# ---------------------------------------------------------------- summary table
"$VPY" - "$STEPS" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(n):
    f = out / f"{n}.json"
    return json.loads(f.read_text()) if f.exists() else {}
e, n, t = load("e2e"), load("nccl"), load("throughput")
print("\n==== summary ====")
print("e2e: components ok", e.get("setup_ok"), "| train rc", e.get("train_rc"), "| score gpu/cpu rc",
      e.get("score_gpu_rc"), e.get("score_cpu_rc"), "(model", str(e.get("scored_model")) + ") | evaluate rc",
      e.get("evaluate_rc"), "| syncbn train rc", e.get("train_syncbn_rc"),
      "(jpeg_decode " + str(e.get("syncbn_jpeg_decode")) + ")", "| training files", e.get("train_files"))
if "library_fallback" in e:
    why = "DRY" if e.get("train_rc") == 0 else "train component failed (see e2e.log; mlflow missing?)"
    print(f"  {why}: library loop + write_trained:", str(e["library_fallback"])[:400])
if "syncbn_library" in e:
    print("  syncbn via the library:", str(e["syncbn_library"])[:300])
print("  metrics:", (e.get("metrics") or "").strip().splitlines()[-2:] if e.get("metrics") else None)
print("gpu vs cpu scores:", e.get("gpu_vs_cpu"))
print("nccl probe:", {k: v for k, v in n.items() if k != "seconds"})
plain = t.get(f"plain_b{t.get('batch')}")
rows = [(k, v if isinstance(v, (int, float)) else v.get("img_s") if isinstance(v, dict) else None)
        for k, v in t.items() if k.startswith(("plain_b", "ours"))]
print(f"{'throughput (' + str(t.get('model')) + ', batch ' + str(t.get('batch')) + ')':40s} {'img/s':>9s} {'/ plain':>8s}")
for k, v in rows:
    print(f"{k:40s} {v if v is None else round(v, 1)!s:>9s} {('%.3f' % (v / plain)) if v and plain else '':>8s}")
print("  compute", t.get("compute"), "| cpus", t.get("cpus"), "| loader_workers", t.get("loader_workers"))
for k, v in t.items():
    if k.startswith("ours") and isinstance(v, dict):
        i = v.get("input_only") or {}
        print(f"  {k}: {v.get('workers')} workers, decode in {v.get('decode')}; main-process CPU "
              f"{v.get('main_cpu_ms_per_img', 0):.2f} ms/img training; input side alone {i.get('img_s', 0):.0f} img/s, "
              f"main-process CPU {i.get('main_cpu_ms_per_img', 0):.2f} ms/img")
    elif k.startswith("ours"):
        print(f"  {k}: {v}")
b = out / "bench_train_throughput.log"  # in $STEPS
if b.exists():
    print("benchmarks/train_throughput.py:"); print("  " + "\n  ".join(b.read_text().strip().splitlines()[-4:]))
EOF
log "done in $((SECONDS - START))s; results in $OUT"
