"""Train the Co-LLM deferral head of the comparison's pair: base ``steps``, assistant ``sums``.

``python -m societies.ensembles.train_co_llm`` does this for bundled models; the variants are
GGUF files of our own, so this script gives its functions a pool naming them. Training data are
train_co_llm's six-number arithmetic solutions (numbers 0..29): not the evaluation sums.

    python experiments/merging/train_pair_head.py runs/merging/pair-head.pt
"""

from __future__ import annotations

import sys
import time

import numpy as np


def main(out: str, n_train: int = 60, n_val: int = 20, seed: int = 0) -> None:
    import torch

    from societies.backends.registry import BackendPool
    from societies.ensembles import co_llm
    from societies.ensembles.co_llm_chat import LlamaHiddenStates
    from societies.ensembles.llama_tokens import from_spec, spec_file
    from societies.ensembles.train_co_llm import collect, examples

    start = time.time()
    pool = BackendPool({name: {"backend": "llamacpp", "n_threads": 2,
                               "path": f"runs/merging/variants/{name}/model-f16.gguf"}
                        for name in ("steps", "sums")})
    specs = [pool.spec("steps"), pool.spec("sums")]
    base, asst = (from_spec(s, 1024) for s in specs)
    reader = LlamaHiddenStates(spec_file(specs[0]), 1024, hidden=True)
    forced = LlamaHiddenStates(spec_file(specs[1]), 1024, hidden=False)
    train = collect(base, asst, reader, forced, examples(n_train, seed), "hidden")
    val = collect(base, asst, reader, forced, examples(n_val, seed + 1_000_003), "hidden")
    head, history = co_llm.train_head(train.features, train.logp_base, train.logp_asst,
                                      seed=seed)
    with torch.no_grad():
        pi = torch.sigmoid(head(torch.as_tensor(val.features))).numpy()
    best, table = co_llm.pick_threshold(pi, val.logp_base, val.logp_asst,
                                        [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0])
    co_llm.save_head(out, head, {"base": base.identity, "assistant": asst.identity,
                                 "features": "hidden", "threshold": best,
                                 "train_examples": n_train, "seed": seed})
    share = float(np.mean(train.logp_asst > train.logp_base))
    print(f"{len(train.logp_base)} train tokens (assistant better on {share:.1%}); "
          f"marginal NLL {history[0]:.4f} -> {history[-1]:.4f}; threshold {best}; "
          f"{time.time() - start:.0f} s")
    for row in table:
        print(f"  eta {row['threshold']:.1f}: val NLL {row['nll']:.4f}, "
              f"defer {row['deferral_rate']:.1%}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/merging/pair-head.pt")
