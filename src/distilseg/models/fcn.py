"""FCN-ResNet50 from torchvision, wrapped to the distilseg model contract.

Why a wrapper rather than a re-implementation: the submodules are torchvision's own (``backbone``,
``classifier``, ``aux_classifier`` under the same names), so torchvision state dicts load as they are and
the parameter count equals ``torchvision.models.segmentation.fcn_resnet50`` exactly. The wrapper returns
a tensor instead of torchvision's dict and taps the backbone stages and the head's penultimate feature.
"""
from __future__ import annotations

from torch import Tensor, nn

from .base import AuxSegmentationModel
from .pretrained import load_local_weights, load_state_into, local_weights_path, torchvision_state_dict
from .registry import register_model

_STAGES = ("layer1", "layer2", "layer3", "layer4")


class FCNResNet50(AuxSegmentationModel):
    """ResNet-50 (dilated, output stride 8) + FCN head; ``aux_loss=True`` adds torchvision's layer3 head.

    Features: outputs of layer1..layer4 (256, 512, 1024, 2048 channels) then the head's 512-channel map
    after conv-BN-ReLU (before dropout and the 1x1 classifier). ``forward_aux`` returns
    ``(logits, [layer3 auxiliary logits])`` (an empty list without ``aux_loss``).
    """

    def __init__(self, num_classes: int, aux_loss: bool = False) -> None:
        super().__init__()
        from torchvision.models.segmentation import fcn_resnet50 as tv_fcn_resnet50

        tv = tv_fcn_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux_loss)
        self.backbone = tv.backbone  # IntermediateLayerGetter: conv1 .. layer4 of a dilated ResNet-50
        self.classifier = tv.classifier  # FCNHead: conv3x3(2048->512), BN, ReLU, Dropout, conv1x1
        self.aux_classifier = tv.aux_classifier  # FCNHead(1024) or None
        self.output_stride = 1  # any input size; logits are resized by the base class
        self.feature_channels = [256, 512, 1024, 2048, self.classifier[0].out_channels]

    def _run(self, x: Tensor, with_aux: bool) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        feats: list[Tensor] = []
        h = x
        for name, module in self.backbone.items():
            h = module(h)
            if name in _STAGES:
                feats.append(h)
        head = self.classifier[2](self.classifier[1](self.classifier[0](h)))
        logits = self.classifier[4](self.classifier[3](head))
        aux = [self.aux_classifier(feats[2])] if with_aux and self.aux_classifier is not None else []
        return logits, feats + [head], aux

    @property
    def has_aux(self) -> bool:
        return self.aux_classifier is not None

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())


@register_model
def fcn_resnet50(num_classes: int, *, aux_loss: bool = False, pretrained: str | None = None) -> nn.Module:
    """FCN with a dilated ResNet-50 backbone (torchvision), optional layer3 auxiliary head."""
    if pretrained is None:
        return FCNResNet50(num_classes, aux_loss=aux_loss)
    local = local_weights_path(pretrained)
    state = None
    if local is None:
        # "imagenet" = torchvision's default backbone weights for fcn_resnet50; a FCN_ResNet50_Weights name
        # loads the whole network (a classifier for another class count is skipped and reported).
        # Fetched before building, so a bad name or no network fails at once.
        state = torchvision_state_dict(
            str(pretrained),
            default="ResNet50_Weights.IMAGENET1K_V1",
            allowed=("ResNet50_Weights", "FCN_ResNet50_Weights"),
        )
    model = FCNResNet50(num_classes, aux_loss=aux_loss)
    targets = {"model": model, "backbone": model.backbone}
    if local is not None:
        model.pretrained_report = load_local_weights(model, local, targets, "fcn_resnet50")
    else:
        model.pretrained_report = load_state_into(model, state, str(pretrained), targets, "fcn_resnet50")
    return model
