"""Starting weights of a new network: ImageNet weights downloaded the normal way, or a user's local weights file.

`ensure_pretrained` fetches ImageNet weights into the usual caches (torch hub for torchvision, the Hugging Face hub
for timm) with a bound on waiting and a `PretrainedUnavailable` that tells the user what to do instead;
`weights_obtainable` says beforehand whether that can work. A local file is read safely (core.models.weightfiles) and
checked against the architecture's body. `learner_args` hands the choice to fastai's vision_learner.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import threading
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from core.models import weightfiles
from core.models.archs import arch_family, fastai_arch, torchvision_builder
from core.models.weightfiles import ModelFileError

LOCAL_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


class PretrainedUnavailable(RuntimeError):
    """ImageNet weights could not be obtained; the message tells the user what to do instead."""

    original: BaseException  # the download's own exception, when it raised one (set by _run_with_timeout)

    def __init__(self, arch: str, cause: str, cache_path: Path | None = None):
        self.arch, self.cause, self.cache_path = arch, cause, cache_path
        where = f"; or copy the file to {cache_path}" if cache_path is not None and cache_path.suffix else ""
        super().__init__(
            f"ImageNet weights for {arch} could not be downloaded ({cause}). Options: train from scratch "
            f"(turn 'pretrained' off) or choose a local weights file (.pth / .safetensors){where}."
        )

    def __reduce__(self) -> tuple:
        """Picklable across worker processes."""
        return (type(self), (self.arch, self.cause, self.cache_path))


# ---------------------------------------------------------------- where ImageNet weights come from


def hub_checkpoints() -> Path:
    """torch hub's download cache folder (torchvision and URL-hosted timm weights)."""
    return Path(torch.hub.get_dir()) / "checkpoints"  # not a run folder


def _tv_url(arch: str) -> str:
    """Download URL of torchvision's default ImageNet weights."""
    import torchvision

    return torchvision.models.get_model_weights(arch).DEFAULT.url


def _timm_cfg(arch: str) -> Any:
    """timm's default pretrained config for a model name."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        raise ValueError(f"timm has no pretrained weights for {arch!r}")
    return cfg


def hf_source(arch: str) -> tuple[str, list[str]]:
    """(Hugging Face repo id, candidate file names in timm's order of preference) for a timm model."""
    cfg = _timm_cfg(arch)
    name = cfg.hf_hub_filename or "pytorch_model.bin"  # file names on the hub (timm's), not ours
    if name.endswith(".safetensors"):
        return cfg.hf_hub_id, [name]
    hub_default = "model.safetensors"  # not a run folder: the hub's name for a converted pytorch_model.bin
    safe = hub_default if name == "pytorch_model.bin" else f"{Path(name).stem}.safetensors"
    return cfg.hf_hub_id, [safe, name]


def _hf_cache_dir() -> Path:
    """Hugging Face hub cache folder (honours HF_HUB_CACHE / HF_HOME)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hf_cached(repo: str, names: list[str]) -> Path | None:
    """The cached file of a timm model in the HF cache, if present."""
    from huggingface_hub import try_to_load_from_cache

    for name in names:
        hit = try_to_load_from_cache(repo, name, cache_dir=str(_hf_cache_dir()))
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    return None


def _hf_offline() -> bool:
    """True when Hugging Face offline mode is on (env var or library constant)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def weights_cache_path(arch: str) -> Path | None:
    """Where the pretrained file is cached: torch hub checkpoints (torchvision) or the HF hub cache (timm).

    For timm: the cached file when present, otherwise the model's folder in the HF cache. None when unknown.
    """
    try:
        family = arch_family(arch)
    except ValueError:
        return None
    if family == "torchvision":
        return hub_checkpoints() / os.path.basename(urlparse(_tv_url(arch)).path)
    cfg = _timm_cfg(arch)
    if not cfg.hf_hub_id:
        return hub_checkpoints() / os.path.basename(urlparse(cfg.url).path) if cfg.url else None
    repo, names = hf_source(arch)
    return _hf_cached(repo, names) or _hf_cache_dir() / f"models--{repo.replace('/', '--')}"


def _weights_host(arch: str) -> str:
    """The host ImageNet weights of `arch` are downloaded from ('' when there is none to ask)."""
    if arch_family(arch) == "torchvision":
        return urlparse(_tv_url(arch)).hostname or ""
    cfg = _timm_cfg(arch)
    if not cfg.hf_hub_id:
        return urlparse(cfg.url).hostname or "" if cfg.url else ""
    from huggingface_hub import constants

    return "" if _hf_offline() else urlparse(constants.ENDPOINT).hostname or ""


def weights_obtainable(arch: str, timeout: float = 1.5) -> tuple[bool, str]:
    """Whether ImageNet weights of `arch` can be had now: in the cache, or their host answers within `timeout` s.

    Returns (ok, why) with a sentence for the user. A proxy is trusted to reach the host (not probed).
    """
    cached = weights_cache_path(arch)
    if cached is not None and cached.is_file():
        return True, "ImageNet weights are in the local cache."
    host = _weights_host(arch)
    if not host:
        return (
            False,
            f"ImageNet weights for {arch} are not in the cache and cannot be downloaded (offline mode).",
        )
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return (
            True,
            f"ImageNet weights will be downloaded from {host} through the proxy when training starts.",
        )
    if not host_reachable(host, timeout):
        return False, (
            f"ImageNet weights for {arch} are not in the cache and {host} cannot be reached from this "
            "server (no internet?)."
        )
    return True, f"ImageNet weights will be downloaded from {host} when training starts."


def host_reachable(host: str, timeout: float) -> bool:
    """Whether a TCP connection to host:443 opens within `timeout` s (name lookup included: run in a thread)."""
    box: dict[str, bool] = {}

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            box["ok"] = True
        except OSError:
            box["ok"] = False

    worker = threading.Thread(target=probe, name=f"probe-{host}", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return box.get("ok", False)


# ---------------------------------------------------------------- downloading pretrained weights


def ensure_pretrained(arch: str, timeout: float = 30) -> Path:
    """Return the cached ImageNet weights file, downloading it the normal way if missing.

    `timeout`: give up when no data has arrived for this many seconds. Failure -> PretrainedUnavailable.
    """
    family = arch_family(arch)
    if family == "torchvision":
        return _ensure_url(arch, _tv_url(arch), timeout)
    cfg = _timm_cfg(arch)
    if not cfg.hf_hub_id:
        if not cfg.url:
            raise PretrainedUnavailable(arch, "timm publishes no ImageNet weights for it")
        return _ensure_url(arch, cfg.url, timeout)
    return _ensure_hf(arch, timeout)


def _ensure_url(arch: str, url: str, timeout: float) -> Path:
    """torchvision-style: torch hub checkpoints cache, torch.hub.download_url_to_file with hash check."""
    dst = hub_checkpoints() / os.path.basename(urlparse(url).path)
    note = _usable_cached(arch, dst)
    if note is None:
        return dst
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PretrainedUnavailable(arch, _cause(e), dst) from None
    match = torch.hub.HASH_REGEX.search(dst.name)
    prefix = match.group(1) if match else None

    def download() -> None:
        torch.hub.download_url_to_file(url, str(dst), prefix, progress=False)

    _run_with_timeout(
        arch, download, timeout, lambda: _bytes_in(dst.parent, f"{dst.name}.*.partial"), dst, note
    )
    _check_downloaded(arch, dst)
    return dst


def _ensure_hf(arch: str, timeout: float) -> Path:
    """timm-style: Hugging Face hub cache via hf_hub_download (safetensors preferred, as timm does)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo, names = hf_source(arch)
    cached = _hf_cached(repo, names)
    note = _usable_cached(arch, cached) if cached else ""
    if cached and note is None:
        return cached
    if _hf_offline():
        raise PretrainedUnavailable(
            arch, "offline mode is on (HF_HUB_OFFLINE=1) and they are not in the cache"
        )

    def download() -> str:
        _resolve_hf_host()
        last: Exception | None = None
        for name in names:
            try:
                return hf_hub_download(repo, name, cache_dir=str(_hf_cache_dir()), etag_timeout=timeout)
            except EntryNotFoundError as e:
                if isinstance(e, LocalEntryNotFoundError):
                    raise
                last = e
        raise last or FileNotFoundError(repo)

    blobs = _hf_cache_dir() / f"models--{repo.replace('/', '--')}" / "blobs"
    path = Path(
        _run_with_timeout(arch, download, timeout, lambda: _bytes_in(blobs, "*.incomplete"), None, note)
    )
    _check_downloaded(arch, path)
    return path


def _resolve_hf_host() -> None:
    """Fail fast when the hub's host name cannot be resolved (no proxy set): huggingface_hub retries ~20 s."""
    from huggingface_hub import constants

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    host = urlparse(constants.ENDPOINT).hostname
    if host:
        try:
            socket.getaddrinfo(host, 443)
        except socket.gaierror as e:
            raise urllib.error.URLError(e) from None


def _usable_cached(arch: str, path: Path | None) -> str | None:
    """None when the cached file is usable; otherwise '' (absent) or a note after removing a broken copy."""
    if path is None or not path.is_file():
        return ""
    try:
        weightfiles.check_weights_file(path)
        return None
    except ModelFileError as e:
        if str(e).startswith("refused"):
            raise PretrainedUnavailable(arch, f"the cached file {path} was refused: {e}") from None
        try:
            path.unlink()
        except OSError:
            raise PretrainedUnavailable(arch, f"the cached file {path} is broken ({e}); delete it") from None
        return f"a broken cached copy was removed: {e}"


def _check_downloaded(arch: str, path: Path) -> None:
    """A freshly downloaded file must pass the same checks as a user's file."""
    try:
        weightfiles.check_weights_file(path)
    except ModelFileError as e:
        raise PretrainedUnavailable(arch, f"the downloaded file is not usable: {e}") from None


def _run_with_timeout(
    arch: str,
    fn: Callable[[], Any],
    timeout: float,
    progress: Callable[[], int],
    dst: Path | None,
    note: str | None,
) -> Any:
    """Run a download in a daemon thread; give up when nothing arrives for `timeout` s; map errors."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported below as a one-line cause
            box["error"] = e

    worker = threading.Thread(target=target, name=f"download-{arch}", daemon=True)
    worker.start()
    seen, since = progress(), time.monotonic()
    while worker.is_alive():
        worker.join(min(0.25, max(timeout, 0.01)))
        size, now = progress(), time.monotonic()
        if size != seen:
            seen, since = size, now
        elif worker.is_alive() and now - since >= timeout:
            raise PretrainedUnavailable(
                arch, _with_note(f"no answer from the server within {timeout:g} s", note), dst
            )
    if "error" in box:
        err = PretrainedUnavailable(arch, _with_note(_cause(box["error"]), note), dst)
        err.original = box["error"]
        raise err from None
    return box.get("result")


def _with_note(cause: str, note: str | None) -> str:
    """Append a note about a removed cached copy to a cause."""
    return f"{cause}; {note}" if note else cause


def _bytes_in(folder: Path, pattern: str) -> int:
    """Total size of partial download files (progress probe)."""
    try:
        return sum(p.stat().st_size for p in folder.glob(pattern))
    except OSError:
        return 0


def _cause(e: BaseException) -> str:
    """A short human cause for a download failure (no tracebacks)."""
    name = type(e).__name__
    if isinstance(e, urllib.error.HTTPError):
        return f"the server answered HTTP {e.code}"
    if isinstance(e, urllib.error.URLError):
        return _net_cause(e.reason)
    if name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return (
            "offline mode is on" if _hf_offline() else "no internet connection (cannot reach huggingface.co)"
        )
    if name in (
        "RepositoryNotFoundError",
        "GatedRepoError",
        "RemoteEntryNotFoundError",
        "EntryNotFoundError",
    ):
        return f"not found on the Hugging Face hub ({name})"
    if "ConnectError" in name or "ConnectionError" in name:
        return "no internet connection"
    if "Timeout" in name or isinstance(e, TimeoutError):
        return "the connection timed out"
    if isinstance(e, RuntimeError) and "hash" in str(e).lower():
        return "the downloaded file was corrupt (hash mismatch); try again"
    if isinstance(e, PermissionError):
        return f"cannot write to the cache folder ({e.filename or torch.hub.get_dir()})"
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "the disk is full"
    if isinstance(e, OSError):
        return _net_cause(e)
    return weightfiles.first_line(e)


def _net_cause(reason: Any) -> str:
    """Translate a socket-level reason."""
    text = str(reason)
    if (
        isinstance(reason, socket.gaierror)
        or "name or service not known" in text.lower()
        or "resolution" in text
    ):
        return "no internet connection (cannot resolve the download server)"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "the connection timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "the connection was refused (proxy or firewall?)"
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "no network (unreachable)"
    if "ssl" in text.lower() or "certificate" in text.lower():
        return f"secure connection failed ({text[:80]})"
    return f"network error: {text[:120]}"


# ---------------------------------------------------------------- local ImageNet-style weights


def check_local_weights(arch: str, weights_path: str | Path) -> dict[str, torch.Tensor]:
    """Read a user's weights file safely and check it fits the body of `arch`; return the body state dict."""
    path = Path(weights_path)
    if path.suffix.lower() not in LOCAL_WEIGHT_SUFFIXES:
        raise ModelFileError(f"{path.name}: choose a .pth, .pt, .bin or .safetensors weights file")
    state = weightfiles.load_state_dict_file(path)
    ref, head = _reference_body(arch)
    body = {k: v for k, v in state.items() if not (head and k.startswith(head))}
    diffs = weightfiles.compare_state_dicts(ref, body)
    if diffs:
        raise ModelFileError(f"{path.name} does not fit {arch}: {'; '.join(diffs)}")
    return body


def _reference_body(arch: str) -> tuple[dict[str, torch.Tensor], str]:
    """State dict of the ImageNet model without its classifier, and the classifier key prefix."""
    if arch_family(arch) == "torchvision":
        model = _on_meta(lambda: torchvision_builder(arch)(weights=None))
        head = list(model.named_children())[-1][0] + "."
        return {k: v for k, v in model.state_dict().items() if not k.startswith(head)}, head
    import timm

    model = _on_meta(lambda: timm.create_model(arch, pretrained=False, num_classes=0))
    classifier = _timm_cfg(arch).classifier
    return dict(model.state_dict()), (classifier + ".") if classifier else ""


def _on_meta(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Build a model on the meta device (shapes only, no memory); fall back to CPU."""
    try:
        with torch.device("meta"):
            return build()
    except Exception:
        return build()


class _LocalTorchvision:
    """A torchvision builder that loads ImageNet-style weights from a local file (fastai calls it)."""

    def __init__(self, arch: str, path: str):
        self.arch, self.path = arch, path
        self.__name__ = f"{arch}_local"

    def __call__(self, weights: Any = None, pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        model = torchvision_builder(self.arch)(weights=None, **kwargs)
        body = check_local_weights(self.arch, self.path)
        model.load_state_dict(body, strict=False)  # only the classifier (cut off by fastai) stays at init
        return model

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _LocalTorchvision) and (self.arch, self.path) == (other.arch, other.path)

    def __hash__(self) -> int:
        return hash((self.arch, self.path))

    def __repr__(self) -> str:
        return f"{self.arch}(weights from {self.path})"


@functools.lru_cache(maxsize=64)
def _local_torchvision(arch: str, path: str) -> _LocalTorchvision:
    """One builder per (arch, file), registered in fastai's model_meta with the base arch's cut/split/stats."""
    from fastai.vision.learner import model_meta

    fn = _LocalTorchvision(arch, path)
    base = model_meta.get(torchvision_builder(arch))
    if base is not None:
        model_meta[fn] = dict(base)
    return fn


# ---------------------------------------------------------------- what fastai gets


def make_arch(arch: str, pretrained: bool = True, weights_path: str = "") -> Any:
    """The `arch` argument for fastai's vision_learner (torchvision builder or timm model name).

    pretrained=True makes sure the ImageNet weights are cached first (PretrainedUnavailable otherwise).
    weights_path (wins over `pretrained`): torchvision -> a builder loading that file; timm -> the model name,
    and the file reaches timm through learner_args()'s `pretrained_cfg_overlay` (use learner_args for timm).
    """
    family = arch_family(arch)
    if weights_path:
        check_local_weights(arch, weights_path)
        if family == "torchvision":
            return _local_torchvision(arch, str(Path(weights_path).resolve()))
        return arch
    if pretrained:
        ensure_pretrained(arch)
    return fastai_arch(arch)


def learner_args(arch: str, pretrained: bool = True, weights_path: str = "") -> dict[str, Any]:
    """Keyword arguments for vision_learner (or archs.create_model's `start`): arch, pretrained, timm's file overlay."""
    family = arch_family(arch)
    out: dict[str, Any] = {
        "arch": make_arch(arch, pretrained, weights_path),
        "pretrained": bool(pretrained or weights_path),
    }
    if family == "timm" and weights_path:
        out["pretrained_cfg_overlay"] = {"file": str(Path(weights_path).resolve())}
    elif family == "timm" and pretrained:
        out["pretrained_cfg_overlay"] = {"file": str(ensure_pretrained(arch))}
    return out
