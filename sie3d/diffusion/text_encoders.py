"""CLIP text encoders: plain prompts (E_SD), Arc2Face ID injection, and an on-disk embedding cache.

Both encoders are ``transformers.CLIPTextModel``; an embedding is the ``last_hidden_state`` (after the
final layer norm) of the prompt padded with ``<|endoftext|>`` to 77 tokens: ``[77, D]``, D = 768 for
SD-1.5 / Arc2Face and the hidden size of the tiny profile's encoders.

Arc2Face ID injection: the prompt ``"photo of a id person"`` is tokenized, and the *input* token
embedding at the position of ``id`` is replaced by the identity vector (unit ArcFace 512-d vector
zero-padded to 768, no scaling) before the transformer runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from .tokenizer import MAX_LENGTH

#: the token whose input embedding carries the identity in Arc2Face's prompt
ID_TOKEN = "id"


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids ``[N, 77]`` (BOS, tokens, EOS, padded with EOS; truncated to 77)."""
    return tokenizer(list(prompts), padding="max_length", max_length=MAX_LENGTH, truncation=True,
                     return_tensors="pt").input_ids


@torch.no_grad()
def encode_prompts(tokenizer, encoder, prompts: list[str]) -> torch.Tensor:
    """E_SD: CLIP ``last_hidden_state`` of each prompt, ``[N, 77, D]`` float32 on the encoder's device."""
    device = next(encoder.parameters()).device
    ids = tokenize(tokenizer, prompts).to(device)
    return encoder(input_ids=ids).last_hidden_state.float()


@dataclass(frozen=True)
class IdentityToken:
    """The identity vector as it enters the encoder, and how it was fitted to the hidden size."""

    vector: torch.Tensor  # [D] float32
    method: str  # "zero-pad" | "projection"
    input_dim: int


def fit_identity_to_hidden(identity: torch.Tensor, hidden_size: int, seed: int = 0) -> IdentityToken:
    """Turn an identity vector of any size into the ``[hidden_size]`` token embedding that replaces ``id``.

    The vector is L2-normalised first. Then

    * ``zero-pad`` when it fits (Arc2Face: 512-d ArcFace -> 768, exactly as Arc2Face was trained;
      the padded vector keeps unit norm, no scaling);
    * ``projection`` when it is longer than the hidden size (the offline tiny prior, whose encoder is
      narrower than dlib's 128-d descriptor): a fixed matrix with orthonormal rows drawn from
      ``seed`` maps it down, and the result is renormalised to unit length. The same seed gives the same
      matrix on every machine (drawn on CPU in float64).

    Args:
        identity: ``[d]`` float tensor (ArcFace 512-d, dlib 128-d, ...).
        hidden_size: D of the encoder's token embeddings.
    """
    if identity.ndim != 1 or identity.numel() == 0:
        raise ValueError(f"the identity must be a 1-D vector, got shape {tuple(identity.shape)}")
    v = identity.detach().double().cpu()
    norm = v.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("the identity vector is zero or not finite; was a face found in the photo?")
    v = v / norm
    d = v.numel()
    if d <= hidden_size:
        return IdentityToken(torch.nn.functional.pad(v, (0, hidden_size - d)).float(), "zero-pad", d)
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randn(d, hidden_size, generator=gen, dtype=torch.float64, device="cpu")
    q, _ = torch.linalg.qr(draws)  # [d, D], q^T q = I
    w = q.T @ v
    return IdentityToken((w / w.norm()).float(), "projection", d)


@torch.no_grad()
def encode_with_identity(tokenizer, encoder, prompt: str, token: IdentityToken,
                         id_token: str = ID_TOKEN) -> torch.Tensor:
    """Arc2Face ID injection: ``[77, D]`` embedding of ``prompt`` with the ``id`` token's input replaced.

    Raises:
        ValueError: when the prompt does not contain the ``id`` token.
    """
    (token_id,) = tokenizer.encode(id_token, add_special_tokens=False)
    ids = tokenize(tokenizer, [prompt])
    mask = ids[0] == token_id  # [77]
    if not bool(mask.any()):
        raise ValueError(f"the identity prompt {prompt!r} has no {id_token!r} token to carry the identity; "
                         "use e.g. conditioning.id_prompt='photo of a id person'")
    embedding_layer = encoder.get_input_embeddings()
    device = embedding_layer.weight.device
    vector = token.vector.to(device=device, dtype=embedding_layer.weight.dtype)
    mask = mask.to(device)

    def inject(_module, _inputs, output):  # output: [1, 77, D] token embeddings
        return torch.where(mask[None, :, None], vector, output)

    handle = embedding_layer.register_forward_hook(inject)
    try:
        return encoder(input_ids=ids.to(device)).last_hidden_state[0].float()
    finally:
        handle.remove()


def weights_fingerprint(files: list[Path]) -> str:
    """Identify a model's weights by its files' sizes and modification times (cheap, no hashing)."""
    parts = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def parameters_fingerprint(module: torch.nn.Module) -> str:
    """Identify a (small) model by a hash of its parameters (used for the tiny profile)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class PromptEmbeddingCache:
    """On-disk cache of prompt embeddings: one ``.pt`` file per (model, prompt[, identity]) key.

    Files live in ``directory`` (default ``$SIE3D_HOME/cache/prompt-embeddings``) and hold CPU float32
    tensors. The key is a sha256 of the model fingerprint and the prompt (and identity vector), so
    another model or prompt never reads a stale entry.
    """

    def __init__(self, directory: str | Path | None = None):
        if directory is None:
            from ..weights import sie3d_home

            directory = sie3d_home() / "cache" / "prompt-embeddings"
        self.directory = Path(directory)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model: str, prompt: str, identity: torch.Tensor | None = None) -> str:
        digest = hashlib.sha256(f"{model}\x00{prompt}".encode())
        if identity is not None:
            digest.update(identity.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def get_or_compute(self, model: str, prompt: str, compute, identity: torch.Tensor | None = None) -> torch.Tensor:
        """The cached ``[77, D]`` tensor, or ``compute()`` stored for next time."""
        path = self.directory / f"{self.key(model, prompt, identity)}.pt"
        if path.is_file():
            self.hits += 1
            return torch.load(path, map_location="cpu", weights_only=True)
        self.misses += 1
        value = compute().detach().float().cpu()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(value, tmp)
        tmp.replace(path)
        return value
