"""Backends: where the heavy libraries (torch, transformers, peft, trl, bitsandbytes) are imported.

Importing this package imports nothing heavy; each backend module does, when the executor asks
for it (`from ftc.runtime.backends import text`). It does put the Hugging Face libraries in
offline mode first (unless the environment says otherwise): ftc never downloads at run time.

text.py        attach a method (full, lora, qlora, adapters, prompt and prefix tuning), SFT
               training (Trainer / TRL SFTTrainer); the text backend's public API lives here
loading.py     the local base model and tokenizer, labels, bitsandbytes quantisation
hf.py          shared trainer plumbing: TrainingArguments from the spec, callbacks, resume
artifacts.py   writing and loading artifacts (adapter, bottleneck adapters, full, merged)
text_eval.py   evaluate() and measure_latency() for text models
bottleneck.py  ftc's bottleneck adapters (peft 0.21 has none)
monitor.py     the TrainerCallback that turns trainer logs into ftc events
"""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
             "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
    os.environ.setdefault(_var, "1")
