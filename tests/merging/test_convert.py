"""GGUF -> Hugging Face -> GGUF: the round trip keeps the model llama.cpp computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from societies.merging.export import export_gguf, to_llamacpp_rows

PROMPT = "<|im_start|>user\nWhat is 6 + 7?<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(("heads", "kv_heads"), [(9, 3), (2, 2), (4, 1)])
def test_export_rows_undo_the_transformers_gguf_loader(heads: int, kv_heads: int) -> None:
    pytest.importorskip("transformers")
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    rng = np.random.default_rng(0)
    loader = LlamaTensorProcessor(config={"num_attention_heads": heads,
                                          "num_key_value_heads": kv_heads})
    q = rng.normal(size=(heads * 8, 5)).astype(np.float32)
    k = rng.normal(size=(kv_heads * 8, 5)).astype(np.float32)
    # what the loader makes of llama.cpp's layout, our export must turn back into it
    assert np.array_equal(
        loader.process(to_llamacpp_rows(q, heads), "blk.0.attn_q.weight").weights, q)
    assert np.array_equal(
        loader.process(to_llamacpp_rows(k, kv_heads), "blk.0.attn_k.weight").weights, k)


def _llama_logits(path: Path) -> tuple[np.ndarray, str]:
    import llama_cpp

    model = llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, logits_all=True, verbose=False)
    tokens = model.tokenize(PROMPT.encode(), special=True)
    model.eval(tokens)
    logits = np.array(model.scores[: len(tokens)])
    reply = model.create_completion(PROMPT, max_tokens=32, temperature=0.0, top_k=1)
    return logits, str(reply["choices"][0]["text"])  # type: ignore[index]


@pytest.mark.real
def test_round_trip_f16_gives_llama_cpp_the_same_logits_and_reply(
        smollm2_hf: Path, tmp_path: Path) -> None:
    """Exported F16 == llama.cpp's own F16 conversion of the shipped Q4_1 file.

    The shipped file itself is not the reference: llama.cpp's Q4_1 kernels quantize the
    activations to 8 bits, so its logits differ from any float model's (by up to 0.63 here).
    """
    from societies.backends.bundled import bundled_path
    from societies.backends.requant import requantized

    reference = requantized(bundled_path("smollm2"), "f16", cache_dir=tmp_path)
    ours = export_gguf(smollm2_hf, tmp_path / "rt.gguf", precision="f16")
    want, want_reply = _llama_logits(reference)
    got, got_reply = _llama_logits(ours)
    assert np.abs(want - got).max() < 1e-3
    assert got_reply == want_reply and "13" in got_reply


@pytest.mark.real
@pytest.mark.slow
def test_round_trip_f32_and_the_checkpoint_match_llama_cpp(smollm2_hf: Path,
                                                          tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from societies.backends.bundled import bundled_path
    from societies.backends.requant import requantized

    want, _ = _llama_logits(requantized(bundled_path("smollm2"), "f16", cache_dir=tmp_path))
    got, _ = _llama_logits(export_gguf(smollm2_hf, tmp_path / "rt32.gguf", precision="f32"))
    assert np.abs(want - got).max() < 0.2
    assert (want.argmax(-1) == got.argmax(-1)).all()
    # the checkpoint itself, run by transformers, agrees with llama.cpp too
    tok = AutoTokenizer.from_pretrained(str(smollm2_hf))
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_hf), dtype=torch.float32)
    ids = tok(PROMPT, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        hf = model(ids).logits[0].numpy()
    assert hf.shape == got.shape
    assert np.abs(hf - got).max() < 0.2
    assert (hf.argmax(-1) == got.argmax(-1)).all()


def test_export_refuses_a_checkpoint_of_another_shape(tmp_path: Path) -> None:
    from societies.errors import UserError
    from tests.merging.conftest import tiny_checkpoint

    pytest.importorskip("gguf")
    small = tiny_checkpoint(tmp_path / "tiny")
    try:
        from societies.backends.bundled import bundled_path

        bundled_path("smollm2")
    except UserError as err:
        pytest.skip(str(err))
    with pytest.raises(UserError, match=r"num_hidden_layers is 1 but .* has llama.block_count"):
        export_gguf(small, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
