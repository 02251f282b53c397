"""Train the Fashion-MNIST model zoo and write checkpoints and model cards to assets/.

Usage: python tools/train_zoo.py [--models fmnist-resnet20 ...] [--epochs N] [--seed 0]

Recipe (per model, see RECIPES): random 2-pixel-padded crops and horizontal flips
(on the 28x28 image, before the resize of a model with a larger input),
one-cycle learning rate, SGD with Nesterov momentum for the CNNs and AdamW for the
ViT, batch 128, the full 60k training split; accuracy is measured on the full
10k test split. Needs the full Fashion-MNIST (Debian's `dataset-fashion-mnist`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ptq_core.checkpoints import save_state_dict  # noqa: E402
from ptq_core.data import ASSETS_DIR, fashion_mnist_arrays, normalize  # noqa: E402
from ptq_core.models import SHARD_BYTES, zoo_checkpoint, zoo_transform  # noqa: E402
from ptq_core.zoo import ZOO_ARCHS  # noqa: E402

RECIPES: dict[str, dict] = {
    "fmnist-resnet20": {"epochs": 10, "opt": "sgd", "lr": 0.2, "wd": 5e-4},
    "fmnist-mobilenetv2": {"epochs": 6, "opt": "sgd", "lr": 0.2, "wd": 4e-5},
    "fmnist-repvgg": {"epochs": 6, "opt": "sgd", "lr": 0.1, "wd": 1e-4},
    "fmnist-vit": {"epochs": 10, "opt": "adamw", "lr": 2e-3, "wd": 0.05},
    "fmnist-resnet18": {"epochs": 5, "opt": "sgd", "lr": 0.1, "wd": 5e-4, "store": "float16"},
}
BATCH = 128


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop from a 2-pixel zero-padded (background) image, and random horizontal flip."""
    b = x.shape[0]
    pad = F.pad(x, [2, 2, 2, 2], value=float(x.min()))
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()  # one shift per batch: cheap
    out = pad[:, :, dy : dy + 28, dx : dx + 28]
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip.view(b, 1, 1, 1), out.flip(3), out)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (%) on tensors, in batches."""
    model.eval()
    correct = sum(int((model(x[i : i + 500]).argmax(1) == y[i : i + 500]).sum()) for i in range(0, len(x), 500))
    return 100.0 * correct / len(x)


def make_optimizer(model: torch.nn.Module, recipe: dict, steps: int):
    """Optimizer plus one-cycle schedule; no weight decay on norms, biases and tokens."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "embed" not in n and "token" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "embed" not in n and "token" not in n)]
    groups = [{"params": decay, "weight_decay": recipe["wd"]}, {"params": rest, "weight_decay": 0.0}]
    if recipe["opt"] == "sgd":
        opt = torch.optim.SGD(groups, lr=recipe["lr"], momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=recipe["lr"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=steps, pct_start=0.15)
    return opt, sched


def train_one(name: str, arrays: dict, epochs: int | None, seed: int) -> dict:
    """Train one zoo model; returns its model card."""
    recipe = dict(RECIPES[name], epochs=epochs or RECIPES[name]["epochs"])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = normalize(arrays["train_x"]), torch.from_numpy(arrays["train_y"].astype("int64"))
    xte, yte = normalize(arrays["test_x"]), torch.from_numpy(arrays["test_y"].astype("int64"))
    resize = zoo_transform(name)
    if resize is not None:
        xte = resize(xte)
    model = ZOO_ARCHS[name]().to(memory_format=torch.channels_last)
    steps_per_epoch = len(xtr) // BATCH
    opt, sched = make_optimizer(model, recipe, recipe["epochs"] * steps_per_epoch)
    start = time.time()
    for epoch in range(recipe["epochs"]):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * BATCH : (i + 1) * BATCH]
            xb = augment(xtr[idx], gen)
            xb = (resize(xb) if resize is not None else xb).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, xte, yte)
        print(
            f"{name} epoch {epoch + 1}/{recipe['epochs']}: loss {loss.item():.3f} test top-1 {acc:.2f} "
            f"({time.time() - start:.0f} s)",
            flush=True,
        )
    model = model.to(memory_format=torch.contiguous_format).eval()
    sd = model.state_dict()
    if recipe.get("store") == "float16":  # keeps the real-size checkpoint small; loading casts back to float32
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    save_checkpoint(name, sd)
    card = {
        "name": name,
        "architecture": type(model).__name__,
        "builder": f"ptq_core.zoo.{ZOO_ARCHS[name].__name__}",
        "parameters": sum(p.numel() for p in model.parameters()),
        "dataset": "Fashion-MNIST (60k train / 10k test), 1x28x28, normalised with mean 0.2860 std 0.3530"
        + (
            f", resized to {resize.channels}x{resize.size}x{resize.size} (bilinear, gray channel repeated)"
            if resize
            else ""
        ),
        "recipe": dict(
            recipe,
            batch=BATCH,
            seed=seed,
            schedule="one-cycle (15% warm-up)",
            label_smoothing=0.1,
            augmentation="random crop (2-px pad) + horizontal flip",
        ),
        "fp_top1": round(evaluate(_reloaded(name, sd), xte, yte), 2),  # as stored (float16 included)
        "train_seconds": round(time.time() - start, 1),
        "torch": torch.__version__,
    }
    if name == "fmnist-repvgg":
        card["note"] = "checkpoint holds the train-time branches; load with deploy=True for the fused form"
    (ASSETS_DIR / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def save_checkpoint(name: str, sd: dict[str, torch.Tensor]) -> None:
    """`assets/<name>.safetensors`, or shards of at most `SHARD_BYTES` each when the weights are larger."""
    for old in zoo_checkpoint(name):
        old.unlink()
    shards: list[dict[str, torch.Tensor]] = [{}]
    for key, tensor in sd.items():
        size = sum(t.numel() * t.element_size() for t in shards[-1].values())
        if shards[-1] and size + tensor.numel() * tensor.element_size() > SHARD_BYTES:
            shards.append({})
        shards[-1][key] = tensor
    if len(shards) == 1:
        save_state_dict(sd, ASSETS_DIR / f"{name}.safetensors")
        return
    for i, shard in enumerate(shards, 1):
        save_state_dict(shard, ASSETS_DIR / f"{name}-{i:05d}-of-{len(shards):05d}.safetensors")


def _reloaded(name: str, sd: dict) -> torch.nn.Module:
    """The model as its stored state dict gives it back (float32 parameters)."""
    model = ZOO_ARCHS[name]()
    model.load_state_dict(sd)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--epochs", type=int, default=None, help="override every recipe's epoch count")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    arrays, source = fashion_mnist_arrays(None, download=True)
    print(f"data: {source}", flush=True)
    for name in args.models:
        card = train_one(name, arrays, args.epochs, args.seed)
        print(json.dumps(card), flush=True)


if __name__ == "__main__":
    main()
