"""``SegModule``: the LightningModule that trains any registered segmentation model.

Why scoring at the mask's native size: evaluation transforms may resize the image, but the reference is
the annotation as published; logits are resized bilinearly to each mask before ``argmax`` so that no label
is ever resampled. Metrics are torchmetrics states (``SegMetrics`` confusion matrix, ``MeanMetric`` loss),
so under DDP they are summed across processes exactly once at epoch end, even when the processes saw
different numbers of validation batches.
"""
from __future__ import annotations

from typing import Any, Callable

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from ..errors import TrainingError
from ..inference.preprocess import resize_scores
from .optim import build_optimizer, build_param_groups, build_scheduler


def _safe_compute(metric: Any) -> Tensor:
    """Collective ``compute`` (every process must call it); NaN when nothing was accumulated."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = metric.compute()
    return value.detach().float().cpu()


def _metrics_class():
    from ..metrics import SegMetrics

    return SegMetrics


class SegModule(pl.LightningModule):
    """Wraps ``model`` with a loss, optimizer/schedule settings, validation metrics and a distiller hook.

    ``settings`` holds only primitives (it is saved in the resume checkpoint, which is read with
    ``weights_only=True``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        num_classes: int,
        settings: dict[str, Any],
        class_names: list[str] | None = None,
        ignore_index: int = 255,
        distiller: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.settings = dict(settings)
        self.class_names = list(class_names) if class_names else None
        # Keep the teacher out of this module's state_dict: the distiller is held by reference only.
        object.__setattr__(self, "_distiller", distiller)
        self.distill_adapters = (
            nn.ParameterList(list(distiller.trainable_parameters())) if distiller is not None else None
        )
        SegMetrics = _metrics_class()
        self.val_metrics = SegMetrics(self.num_classes, ignore_index=self.ignore_index, class_names=class_names)
        from torchmetrics import MeanMetric

        self.val_loss_mean = MeanMetric()
        self.train_loss_mean = MeanMetric()
        self.skipped_nonfinite = 0
        self.last_val: dict[str, Any] | None = None
        self.epoch_train_loss: float | None = None
        self.epoch_val_loss: float | None = None
        self.loss_hook: Callable[[Tensor], Tensor] | None = None  # tests inject faults here

    @property
    def distiller(self) -> nn.Module | None:
        return self._distiller

    # -- state that must survive resume -------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["distilseg_skipped_nonfinite"] = int(self.skipped_nonfinite)
        checkpoint["distilseg_num_classes"] = int(self.num_classes)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_nonfinite = int(checkpoint.get("distilseg_skipped_nonfinite", 0))

    # -- forward / train -----------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _channels_last(self) -> bool:
        """NHWC on a GPU always; on a CPU when asked (``--channels-last``): with ``bf16-mixed`` on CPUs with
        AVX512-BF16 it lets oneDNN's bf16 kernels run (``benchmarks/train_throughput.py --settings``)."""
        return self.device.type == "cuda" or bool(self.settings.get("channels_last", False))

    def setup(self, stage: str) -> None:
        if self._channels_last():
            self.model.to(memory_format=torch.channels_last)

    def on_train_epoch_start(self) -> None:
        self.last_val = None  # an epoch without validation must not repeat the previous scores
        # A frozen encoder keeps its normalization statistics too (fine-tuning practice).
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and all(
                not p.requires_grad for p in m.parameters(recurse=False)
            ) and any(True for _ in m.parameters(recurse=False)):
                m.eval()
        d = self.distiller
        if d is not None:
            teacher = getattr(d, "teacher", None)
            if isinstance(teacher, nn.Module):
                teacher.eval()
                for p in teacher.parameters():
                    p.requires_grad_(False)
            d.to(self.device)

    def _uses_aux(self) -> bool:
        """Auxiliary heads (``aux_loss=True`` on fcn_resnet50 / danet) are trained: without their loss they
        would get no gradient (dead weights; DDP refuses unused parameters)."""
        return bool(self.model.training and getattr(self.model, "has_aux", False)
                    and callable(getattr(self.model, "forward_aux", None)))

    def _task_and_terms(self, images: Tensor, masks: Tensor,
                        teacher_images: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        d = self.distiller
        aux: list[Tensor] = []
        if self._uses_aux():
            if d is None:
                logits, aux = self.model.forward_aux(images)
            else:
                logits, aux, feats = self.model.forward_aux(images, return_features=True)
        elif d is None:
            logits = self.model(images)
        else:
            logits, feats = self.model(images, return_features=True)
        task = self.loss_fn(logits, masks)
        if aux:
            # torchvision's segmentation reference: loss = main + 0.5 * aux (for each auxiliary output)
            weight = float(self.settings.get("aux_weight", 0.5))
            task = task + weight * sum((self.loss_fn(a, masks) for a in aux), torch.zeros((), device=task.device))
        if d is None:
            return task, {}
        terms = d(images if teacher_images is None else teacher_images, logits, feats, masks)
        return task, dict(terms)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        images, masks = batch["image"], batch["mask"]
        clean = batch.get("image_clean")  # distill --teacher-view clean: the teacher's view of the same crop
        if self._channels_last():
            images = images.contiguous(memory_format=torch.channels_last)
            clean = None if clean is None else clean.contiguous(memory_format=torch.channels_last)
        task, terms = self._task_and_terms(images, masks, clean)
        if self.distiller is not None:
            hard = float(getattr(self.distiller, "hard_weight", 1.0))
            loss = hard * task + sum(terms.values(), torch.zeros((), device=task.device))
        else:
            loss = task
        if self.loss_hook is not None:
            loss = self.loss_hook(loss)
        finite = bool(torch.isfinite(loss.detach()).all())
        if self.trainer.world_size > 1:  # all processes skip (or stop) together, or DDP would hang
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            limit = int(self.settings.get("skip_nonfinite", 0))
            where = f"epoch {self.current_epoch + 1}, step {self.global_step} (batch {batch_idx})"
            if self.skipped_nonfinite < limit:
                self.skipped_nonfinite += 1
                print(
                    f"warning: non-finite loss at {where}: step skipped "
                    f"({self.skipped_nonfinite}/{limit} allowed by --skip-nonfinite)"
                )
                self.log("skipped_nonfinite", float(self.skipped_nonfinite), on_step=True, on_epoch=False)
                return None  # Lightning skips backward and the optimizer step
            raise TrainingError(
                f"loss became {loss.detach().float().item()} at {where}; stopped. The last good resume state is "
                f"kept in OUT/checkpoints/last.ckpt. Lower --lr, add --grad-clip, use --precision 32, or allow "
                f"a few bad batches with --skip-nonfinite N"
            )
        bs = int(images.shape[0])
        self.log("train_loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=bs)
        if terms:
            self.log("train_task_loss", task.detach(), on_step=True, on_epoch=False, batch_size=bs)
            for k, v in terms.items():
                self.log(f"train_{k}", v.detach(), on_step=True, on_epoch=False, batch_size=bs)
        self.train_loss_mean.update(loss.detach(), weight=bs)
        return loss

    def on_train_epoch_end(self) -> None:
        value = _safe_compute(self.train_loss_mean)
        self.train_loss_mean.reset()
        self.epoch_train_loss = float(value)
        self.log("train_loss", value.float(), on_epoch=True, sync_dist=False)

    # -- validation ----------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        images, masks = batch["image"], batch["mask"]
        if isinstance(images, Tensor) and isinstance(masks, Tensor):
            self._score(images, masks)  # one mask size for the batch: logits resized to it at once
            return
        # list batches (samples of different sizes): one at a time, logits resized to each mask's native size
        for img, mask in zip(list(images), list(masks)):
            self._score(img.unsqueeze(0), mask.unsqueeze(0))

    def _score(self, images: Tensor, masks: Tensor) -> None:
        images = images.to(self.device)
        masks = masks.to(self.device)
        logits = self.model(images)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        # the same function (and float32) as ``distilseg eval``, so the recorded val mIoU is eval's
        logits = resize_scores(logits.float(), masks.shape[-2:])
        loss = self.loss_fn(logits, masks)
        if torch.isfinite(loss):
            self.val_loss_mean.update(loss.detach(), weight=int(images.shape[0]))
        self.val_metrics.update(logits.argmax(1), masks)

    def on_validation_epoch_end(self) -> None:
        result = self.val_metrics.compute()  # synced (summed confusion matrix) across processes
        self.val_metrics.reset()
        vloss = _safe_compute(self.val_loss_mean)
        self.val_loss_mean.reset()
        self.epoch_val_loss = float(vloss)
        miou = result.get("mIoU")
        miou = float("nan") if miou is None else float(miou)
        self.last_val = {k: v for k, v in result.items()}
        self.log("val_mIoU", miou, prog_bar=True, sync_dist=False)
        self.log("val_loss", float(vloss), prog_bar=False, sync_dist=False)
        pa = result.get("pixel_accuracy")
        if pa is not None:
            self.log("val_pixel_accuracy", float(pa), sync_dist=False)

    # -- optimizer -----------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        s = self.settings
        extra = list(self.distill_adapters) if self.distill_adapters is not None else []
        groups = build_param_groups(
            self.model, float(s["lr"]), float(s["weight_decay"]), float(s.get("encoder_lr_mult", 1.0)), extra
        )
        opt = build_optimizer(s["optimizer"], groups, float(s["lr"]))
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, int(self.trainer.max_epochs or 1)))
        self.schedule_length = {"total": total}  # a time budget shortens it (training.budget)
        sched = build_scheduler(
            opt, s["scheduler"], total, per_epoch, float(s.get("warmup_epochs", 0.0)), float(s.get("gamma", 0.9)),
            self.schedule_length,
        )
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": sched}
