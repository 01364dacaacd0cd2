"""Model identities: what the call cache keys on must change exactly when replies can change.

No model is loaded here: identities are computed when a backend is created, from the file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from societies.backends import identity, llamacpp, llamacpp_batch
from societies.backends.identity import file_digest
from societies.backends.scripted import ScriptedBackend

MIB = 1 << 20


def fake_gguf(path: Path, size: int = 17 * MIB) -> Path:
    """A file that passes the GGUF check (magic bytes) and is big enough to matter."""
    with path.open("wb") as fh:
        fh.write(b"GGUF" + bytes(size - 4))
    return path


def poke(path: Path, offset: int, value: bytes, keep_mtime: bool = False) -> None:
    """Change bytes in place (same size); optionally put the old modification time back."""
    stat = path.stat()
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(value)
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    else:  # some filesystems keep mtime to the second: make the change visible
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_file_digest_hashes_the_whole_file_once_per_path_size_and_mtime(tmp_path: Path) -> None:
    file = tmp_path / "weights.bin"
    file.write_bytes(b"a" * 1000)
    first = file_digest(file)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    # Same path, size and mtime: the remembered digest, even though the bytes differ now.
    poke(file, 10, b"b", keep_mtime=True)
    assert file_digest(file) == first
    identity._MEMO.clear()  # a new process: the digest comes from digests.json
    assert file_digest(file) == first
    assert (Path(os.environ["SOCIETIES_CACHE_DIR"]) / "digests.json").is_file()
    poke(file, 20, b"c")  # a new mtime: hashed again
    assert file_digest(file) == hashlib.sha256(file.read_bytes()).hexdigest() != first


def test_a_byte_past_16_mib_changes_every_gguf_backends_identity(tmp_path: Path) -> None:
    model = fake_gguf(tmp_path / "model.gguf")
    single = llamacpp.LlamaCppBackend(llamacpp.Options(path=str(model)))
    batched = llamacpp_batch.LlamaCppBatchBackend(llamacpp_batch.Options(path=str(model)))
    assert single.identity == identity.gguf_identity(model)
    # Batched replies equal these only where kernels compute rows alone (not on Gemma-3's
    # repacked Q4_K): the two never share cache entries.
    assert batched.identity == f"{single.identity}:batched"
    poke(model, 16 * MIB + 12345, b"\x01")  # the old identity hashed only the first 16 MiB
    assert llamacpp.LlamaCppBackend(llamacpp.Options(path=str(model))).identity != single.identity
    assert llamacpp_batch.LlamaCppBatchBackend(
        llamacpp_batch.Options(path=str(model))).identity != batched.identity


def test_gguf_identity_tells_prompt_format_and_flash_attention_apart(tmp_path: Path) -> None:
    model = fake_gguf(tmp_path / "m.gguf", size=MIB)

    def ident(**options: object) -> str:
        return llamacpp.LlamaCppBackend(llamacpp.Options(path=str(model), **options)).identity

    assert len({ident(), ident(prompt_format="plain"), ident(flash_attn=True)}) == 3
    # Execution-only options leave it alone.
    assert ident(n_threads=1) == ident()


def test_transformers_gguf_identity_hashes_the_whole_file(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    from societies.backends import hf

    model = fake_gguf(tmp_path / "model.gguf")
    before = hf.create(hf.Options(model=str(model)), None).identity
    poke(model, 16 * MIB + 1, b"\x01")
    assert hf.create(hf.Options(model=str(model)), None).identity != before


def test_scripted_identity_comes_from_the_script() -> None:
    same = [ScriptedBackend(["(A)", "(B)"]), ScriptedBackend(("(A)", "(B)"), delay=0.5)]
    assert same[0].identity == same[1].identity  # shares cache entries, as a model file does
    assert ScriptedBackend(["(A)", "(C)"]).identity != same[0].identity

    def script(messages: object) -> str:
        return "(A)"

    def other(messages: object) -> str:
        return "(B)"

    def answering(letter: str):  # type: ignore[no-untyped-def]
        return lambda messages: letter

    assert ScriptedBackend(script).identity == ScriptedBackend(script).identity
    assert ScriptedBackend(script).identity != ScriptedBackend(other).identity
    # Same code, other captured value: other replies, so another identity.
    assert ScriptedBackend(answering("A")).identity == ScriptedBackend(answering("A")).identity
    assert ScriptedBackend(answering("A")).identity != ScriptedBackend(answering("B")).identity
    assert ScriptedBackend(script).identity != ScriptedBackend(["(A)"]).identity
