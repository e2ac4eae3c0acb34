"""Per-epoch metrics of a fine-tuning run: the log line, `history.json` and `training_curves.png`.

Epoch 0 is the linear probe the network starts from (frozen ImageNet features + logistic head), so the curves
show what fine-tuning added, and the checkpoint choice may keep the probe when fine-tuning does not help.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float | None  # None for epoch 0 (no training step)
    train_accuracy: float | None  # on the augmented batches, as trained
    val_loss: float
    val_accuracy: float
    val_balanced_accuracy: float
    lr: float | None
    seconds: float  # wall
    cpu_seconds: float  # process CPU time (all threads)
    loadavg: float  # 1-minute load average at the end of the epoch: context for the timings

    def line(self, total: int, best: bool) -> str:
        train = "linear probe" if self.train_loss is None else f"train loss {self.train_loss:.4f} acc {self.train_accuracy:.4f}"
        lr = "" if self.lr is None else f" | lr {self.lr:.2e}"
        return (f"epoch {self.epoch}/{total}: {train} | val loss {self.val_loss:.4f} acc {self.val_accuracy:.4f} "
                f"(balanced {self.val_balanced_accuracy:.4f}){lr} | {self.seconds:.0f}s wall, {self.cpu_seconds:.0f}s CPU, "
                f"load {self.loadavg:.1f}{' | best' if best else ''}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plot_history(history: list[EpochRecord], best_epoch: int, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r.epoch for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(8.4, 3.4), dpi=120)
    trained = [r for r in history if r.train_loss is not None]
    ax_loss.plot([r.epoch for r in trained], [r.train_loss for r in trained], "o-", label="train (augmented)")
    ax_loss.plot(epochs, [r.val_loss for r in history], "o-", label="validation")
    ax_acc.plot([r.epoch for r in trained], [r.train_accuracy for r in trained], "o-", label="train (augmented)")
    ax_acc.plot(epochs, [r.val_accuracy for r in history], "o-", label="validation")
    for ax, name in ((ax_loss, "loss (class-weighted cross-entropy)"), (ax_acc, "accuracy")):
        ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=0.8, label=f"chosen: epoch {best_epoch}")
        ax.set_xlabel("epoch (0 = linear probe)")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
