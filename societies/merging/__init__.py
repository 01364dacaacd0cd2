"""Checkpoints made here: the bundled GGUF as a Hugging Face model, fine-tuned variants of it,
their mergekit merges, and those written back to GGUF for llama.cpp.

Modules: :mod:`~societies.merging.convert` (GGUF -> Hugging Face), :mod:`~societies.merging.data`
(training data and the evaluation-overlap check), :mod:`~societies.merging.finetune`,
:mod:`~societies.merging.merge` (mergekit) and :mod:`~societies.merging.export` (-> GGUF).
"""
