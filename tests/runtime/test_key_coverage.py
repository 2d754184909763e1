"""No key silently ignored: every key compiler/honoured.py says a backend applies is observed applied
in tiny runs of that backend, with a value other than its default.

Each backend's test trains a few tiny specs (one or two steps; CPU, one thread), written so that one
run carries many keys, and looks where each key must land: the trainer's arguments, the optimizer
and its param groups, the peft config and which parameters require grad, the rows that reached
training (read, renamed, deduplicated, cut to length), the evaluation (declared metrics, slices,
latency warm-up), the artifacts. `Seen` records an observation per key (an assertion that held);
`covers` then fails when a key the backend lists in HONOURED has none, or when a key is observed
that the table does not list. The keys the shared pipeline applies around every backend
(honoured.PIPELINE: data read and split by the compiler, gates, the record, the MLflow mirror)
are observed once, in test_pipeline_applies_its_keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from ftc.compiler import honoured as h
from ftc.runtime.api import TrainContext
from ftc.runtime.backends import hf, loading, text, text_eval

from tests.runtime import _pref_fixtures as F
from tests.runtime.conftest import SCHEMA, chat_rows, gen_rows, ticket_rows

Calls = list[tuple[tuple[Any, ...], dict[str, Any], Any]]


class Seen(dict[str, str]):
    """Observed keys of one backend: key -> what showed it applied."""

    def __init__(self, backend: str) -> None:
        super().__init__()
        self.backend = backend

    def __call__(self, keys: str, applied: Any, what: str) -> None:
        assert applied, f"{self.backend}: `{keys}` not applied: {what}"
        for k in keys.split():
            self[k] = what

    def covers(self) -> None:
        want = h.HONOURED[self.backend] - h.PIPELINE
        missing = sorted(want - set(self))
        assert not missing, f"{self.backend}: keys in HONOURED that no run observed applied: {missing}"
        extra = sorted(set(self) - h.HONOURED[self.backend])
        assert not extra, f"{self.backend}: keys observed applied that HONOURED does not list: {extra}"


class Unless:
    """`seen`, but keys whose last part is in `omit` (not written, so not applied) are not observed."""

    def __init__(self, seen: Seen, omit: tuple[str, ...]) -> None:
        self.seen, self.omit = seen, omit

    def __call__(self, keys: str, applied: Any, what: str) -> None:
        kept = " ".join(k for k in keys.split() if k.rsplit(".", 1)[-1] not in self.omit)
        if kept:
            self.seen(kept, applied, what)


def test_a_key_without_an_observation_fails_and_so_does_one_the_table_does_not_list() -> None:
    seen = Seen("vision")
    for key in h.HONOURED["vision"] - h.PIPELINE - {"train.augment"}:
        seen(key, True, "observed")
    with pytest.raises(AssertionError, match=r"no run observed applied: \['train.augment'\]"):
        seen.covers()
    seen("train.augment train.packing", True, "observed")
    with pytest.raises(AssertionError, match=r"HONOURED does not list: \['train.packing'\]"):
        seen.covers()
    with pytest.raises(AssertionError, match="not applied"):
        seen("train.seed", False, "seed 0")


def spy(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> Calls:
    """Record every call of owner.name (args, kwargs, result); the real function still runs."""
    calls: Calls = []
    real = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        calls.append((args, kwargs, out))
        return out

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def loaded_with(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """(path, kwargs) of every base the text backends load through loading.load_base."""
    seen: list[tuple[str, dict[str, Any]]] = []
    real = loading.model_class

    class Recording:
        def __init__(self, cls: Any) -> None:
            self.cls = cls

        def from_pretrained(self, path: str, **kwargs: Any) -> Any:
            seen.append((path, kwargs))
            return self.cls.from_pretrained(path, **kwargs)

    monkeypatch.setattr(loading, "model_class", lambda task: Recording(real(task)))
    return seen


def notes(events: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in events if e["event"] == "note"]


def has_note(events: list[dict[str, Any]], *words: str) -> bool:
    return any(all(w in m for w in words) for m in notes(events))


def value(setting: Any) -> str:
    """An enum's value (transformers' SchedulerType, OptimizerNames) or the string itself."""
    return str(getattr(setting, "value", setting))


def trainable(model: Any) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def artifact_base(folder: Path) -> str:
    info = json.loads((folder / "ftc_artifact.json").read_text(encoding="utf-8"))
    return str(info["base_model"])


def spec(model: str, method: str, signal: str, data: str, train: str, eval_: str, extra: str = "") -> str:
    """A spec of these blocks' bodies (`extra`: whole blocks more, such as `tracking { ... }`)."""
    return f"""spec "keys" {{
  intent {{ goal behavior }}
  model {{ {model} }}
  method {method}
  signal {signal}
  data {{ {data} }}
  train {{ {train} }}
  eval {{ {eval_} }}
  {extra}
}}
"""


def context(root: Path, text_: str, *, max_steps: int | None = None, allow: tuple[str, ...] = ()) -> TrainContext:
    """The spec checked (data read) in `root` with its events in ctx.events; errors but `allow`ed ones fail."""
    root.mkdir(parents=True, exist_ok=True)
    events: list[dict[str, Any]] = []
    ctx = F.context(root, text_, events, max_steps=max_steps, allow=("FT202", "FT217", *allow))
    ctx.events = events  # type: ignore[attr-defined]
    return ctx


def events_of(ctx: TrainContext) -> list[dict[str, Any]]:
    return ctx.events  # type: ignore[attr-defined, no-any-return]


# ---------------------------------------------------------------------------------------------
# What every backend applies itself: deduplication, evaluation (metrics, slices), latency warm-up


def dedup_applied(ctx: TrainContext) -> bool:
    """The plan's dedup node, run by the executor on the train split with its first row repeated,
    removes the copy (the node exists only because the spec asks for `dedup`)."""
    from ftc.compiler.plan import build_plan
    from ftc.runtime.executor import LocalExecutor, RunState

    plan = build_plan(ctx.checked)
    node = next(n for n in plan.nodes if n.kind == "dedup")
    state = RunState(plan, ctx.checked, ctx.run_dir, lambda e: None)
    train = ctx.parts["train"]
    copy = type(train)(train.name, [*train.rows, dict(train.rows[0])], [*train.paths, train.paths[0]],
                       [*train.locations, train.locations[0]], train.location_kind, image_sha256=train.image_sha256)
    state.parts = {**ctx.parts, "train": copy}
    LocalExecutor().run(node, state)
    return len(state.parts["train"].rows) == len(train.rows)


def evaluation_applied(seen: Seen, ctx: TrainContext, backend: Any, declared: dict[str, str], slice_n: int,
                       warmup: int) -> Any:
    """The backend's evaluation of the base on `test` computes each declared metric (`declared`:
    metric name -> the name it must report, e.g. f1 -> f1.weighted) and the spec's slice (with
    `slice_n` rows); its latency measurement warms up with the spec's `latency_warmup`."""
    result = backend.evaluate(ctx, None, "test")
    for name, reported in declared.items():
        seen("eval.metrics", name in result.metrics and reported in result.metrics
             and result.metrics[name] == result.metrics[reported], f"evaluation reports `{name}` as `{reported}`")
    seen("data.slices", result.slices and next(iter(result.slices.values()))["n"] == slice_n,
         f"evaluation scores the slice ({slice_n} rows): {result.slices}")
    latency = backend.measure_latency(ctx, None, "test", n=2)
    seen("eval.latency_warmup", latency["warmup"] == warmup, f"latency warms up {latency['warmup']} requests")
    return result



# ---------------------------------------------------------------------------------------------
# Methods: one block per method with non-default values, and where each lands in the model


ARCH = {  # the tiny models' module names
    "bert": {"targets": ("query", "value"), "unfreeze": "layer.1", "freeze": "layer.1.output", "trained": ".layer.1.attention.",
             "attention": "attention.output.dense", "ffn": "layer.0.output.dense", "lora_bias": "query.base_layer.bias",
             "other_bias": "key.bias"},
    "gpt2": {"targets": ("c_attn",), "unfreeze": "h.1", "freeze": "h.1.mlp", "trained": ".h.1.attn.",
             "attention": "attn.c_proj", "ffn": "mlp.c_proj", "lora_bias": "c_attn.base_layer.bias",
             "other_bias": "mlp.c_fc.bias"},
}


def method_block(kind: str, arch: str, head: str | None = None, omit: tuple[str, ...] = ()) -> str:
    """`omit`: keys left out of the block (those the backend does not apply, which check refuses)."""
    a = ARCH[arch]
    targets = json.dumps(list(a["targets"]))
    unfreeze = json.dumps([a["unfreeze"], head] if head else [a["unfreeze"]])
    block = {
        "lora": f"lora {{ rank 4; alpha 12; dropout 0.2; targets {targets}; bias lora_only; merge true }}",
        "qlora": (f"qlora {{ rank 2; alpha 6; dropout 0.3; targets {targets}; bias all; bits 4; quant_type fp4; "
                  "double_quant false; compute_dtype fp32 }"),
        "adapters": "adapters { bottleneck 8; placement both; dropout 0.1 }",
        "prompt_tuning": 'prompt_tuning { virtual_tokens 3; init_text "please answer" }',
        "prefix_tuning": "prefix_tuning { prefix_length 4; projection true }",
        "full": f"full {{ unfreeze {unfreeze}; freeze {json.dumps([a['freeze']])} }}",
    }[kind]
    head, body = block.split("{", 1)
    kept = [c.strip() for c in body.rstrip("} ").split(";") if c.strip() and c.split()[0] not in omit]
    return f"{head}{{ {'; '.join(kept)} }}"


class Attached:
    """The model a backend's attach function returned, with what trained at that moment (a
    reward model's LoRA is merged away later)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.trainable = trainable(model)
        self.peft = dict(getattr(model, "peft_config", {}) or {})


def attached(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[Attached]:
    out: list[Attached] = []
    real = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        model = real(*args, **kwargs)
        out.append(Attached(model[0] if isinstance(model, tuple) else model))
        return model

    monkeypatch.setattr(owner, name, wrapper)
    return out


def dropouts_in_training(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, float]]:
    """For each training that starts (a transformers Trainer's train(), ftc's loop.Loop.run()):
    the p of every nn.Dropout in the model being trained, as training begins (a trainer may have
    changed them: TRL's DPO and reward trainers disable dropout)."""
    from ftc.runtime.backends import loop
    from transformers import Trainer

    out: list[dict[str, float]] = []

    def snapshot(model: Any) -> None:
        out.append({n: float(m.p) for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout)})

    for owner, attr in ((Trainer, "train"), (loop.Loop, "run")):
        real = getattr(owner, attr)

        def wrapper(self: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            snapshot(self.model)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(owner, attr, wrapper)
    return out


def quantised(model: Any) -> bool:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return loading.is_quantized(inner)


def method_applied(seen: Seen, kind: str, arch: str, got: Attached, quant: Any = None, omit: tuple[str, ...] = (),
                   dropouts: dict[str, float] | None = None) -> None:
    """The keys of method_block(kind, arch, omit=omit) in the attached model; `dropouts`: the
    model's dropout modules as training began (dropouts_in_training), where dropout keys must show."""
    seen = Unless(seen, omit)
    a, names, p = ARCH[arch], got.trainable, f"method.{kind}"
    cfg = got.peft.get("default")
    if kind in ("lora", "qlora"):
        rank, alpha = (4, 12) if kind == "lora" else (2, 6)
        seen(f"{p}.rank", cfg.r == rank, f"peft r {cfg.r}")
        seen(f"{p}.alpha", cfg.lora_alpha == alpha, f"peft lora_alpha {cfg.lora_alpha}")
        drop = 0.2 if kind == "lora" else 0.3
        lora = {n: q for n, q in (dropouts or {}).items() if "lora_dropout" in n}
        seen(f"{p}.dropout", cfg.lora_dropout == drop and lora and set(lora.values()) == {drop},
             f"LoRA dropout modules in training: {sorted(set(lora.values()))}")
        seen(f"{p}.targets", set(cfg.target_modules) == set(a["targets"]), f"target_modules {cfg.target_modules}")
        lora_bias = any(n.endswith(a["lora_bias"]) for n in names)
        other_bias = any(n.endswith(a["other_bias"]) for n in names)
        seen(f"{p}.bias", lora_bias and (other_bias if kind == "qlora" else not other_bias),
             "biases train: the LoRA layers' only (lora_only), or every one (all)")
    if kind == "qlora":
        seen(f"{p}.bits", quant.load_in_4bit and quantised(got.model), "the base loaded in 4 bits")
        seen(f"{p}.quant_type", quant.bnb_4bit_quant_type == "fp4", f"quant_type {quant.bnb_4bit_quant_type}")
        seen(f"{p}.double_quant", quant.bnb_4bit_use_double_quant is False, "no double quantisation")
        seen(f"{p}.compute_dtype", quant.bnb_4bit_compute_dtype == torch.float32, "fp32 compute")
    if kind == "adapters":
        from ftc.runtime.backends import bottleneck

        modules = dict(got.model.named_modules())
        wrapped = sorted(n for n, m in modules.items() if hasattr(m, bottleneck.ATTR))
        adapter = getattr(modules[wrapped[0]], bottleneck.ATTR)
        seen(f"{p}.bottleneck", adapter.down.out_features == 8, "adapters project down to 8")
        seen(f"{p}.placement", any(n.endswith(a["attention"]) for n in wrapped)
             and any(n.endswith(a["ffn"]) for n in wrapped), "adapters after attention and feed-forward outputs")
        held = {n: q for n, q in (dropouts or {}).items() if n.endswith(f"{bottleneck.ATTR}.dropout")}
        seen(f"{p}.dropout", held and set(held.values()) == {0.1}, f"adapter dropout in training: {set(held.values())}")
    if kind == "prompt_tuning":
        seen(f"{p}.virtual_tokens", cfg.num_virtual_tokens == 3, f"num_virtual_tokens {cfg.num_virtual_tokens}")
        seen(f"{p}.init_text", value(cfg.prompt_tuning_init) == "TEXT" and cfg.prompt_tuning_init_text == "please answer",
             f"initialised from text ({value(cfg.prompt_tuning_init)})")
    if kind == "prefix_tuning":
        seen(f"{p}.prefix_length", cfg.num_virtual_tokens == 4, f"num_virtual_tokens {cfg.num_virtual_tokens}")
        seen(f"{p}.projection", cfg.prefix_projection is True, "prefix_projection")
    if kind == "full":
        heads = ("classifier.", "score.")
        seen(f"{p}.unfreeze", names and all(f".{a['unfreeze']}." in f".{n}" or n.startswith(heads) for n in names),
             f"only {a['unfreeze']} (and the head) train")
        seen(f"{p}.freeze", not any(f".{a['freeze']}." in f".{n}" for n in names) and any(a["trained"] in f".{n}"
                                                                                          for n in names),
             f"{a['freeze']} stays frozen inside {a['unfreeze']}")


# ---------------------------------------------------------------------------------------------
# The optimisation settings: FULL_TRAIN (and STAGE_TRAIN for RLHF stages), in trainer arguments


FULL_TRAIN = ("steps 4; learning_rate 3e-3; schedule cosine; warmup 0.25; batch_size 4; grad_accum 2; precision bf16; "
              "optimizer sgd; weight_decay 0.01; max_grad_norm 0.5; gradient_checkpointing true; seed 11; "
              "early_stopping patience 1 on val.loss min_delta 100; checkpoints keep 1 every 1 steps")
FULL = {"steps": 4, "learning_rate": 3e-3, "schedule": "cosine", "warmup": 1, "batch_size": 4, "grad_accum": 2,
        "optimizer": "sgd", "weight_decay": 0.01, "max_grad_norm": 0.5, "gradient_checkpointing": True, "seed": 11,
        "checkpoints": (1, 1)}
STAGE_TRAIN = ("steps 3; learning_rate 2e-3; schedule constant; warmup 0.5; batch_size 2; grad_accum 3; precision fp32; "
               "optimizer adamw_8bit; weight_decay 0.02; max_grad_norm 0.25; gradient_checkpointing false; seed 5; "
               "checkpoints keep 2 every 2 steps")
STAGE = {"steps": 3, "learning_rate": 2e-3, "schedule": "constant_with_warmup", "warmup": 2, "batch_size": 2,
         "grad_accum": 3, "optimizer": "adamw_torch", "weight_decay": 0.02, "max_grad_norm": 0.25,
         "gradient_checkpointing": False, "seed": 5, "checkpoints": (2, 2)}


def trainer_args_applied(seen: Seen, args: Any, want: dict[str, Any], prefix: str = "train") -> None:
    """The optimisation keys in TrainingArguments (or a TRL config): `want` as FULL or STAGE."""
    p = prefix
    checkpointing = getattr(args, "activation_checkpointing", None)
    if checkpointing is None:
        checkpointing = args.gradient_checkpointing
    got = {"steps": args.max_steps, "learning_rate": args.learning_rate, "schedule": value(args.lr_scheduler_type),
           "warmup": args.warmup_steps, "batch_size": args.per_device_train_batch_size,
           "grad_accum": args.gradient_accumulation_steps, "optimizer": value(args.optim),
           "weight_decay": args.weight_decay, "max_grad_norm": args.max_grad_norm,
           "gradient_checkpointing": checkpointing, "seed": args.seed if args.data_seed == args.seed else None,
           "checkpoints": (args.save_steps, args.save_total_limit)}
    for name, expected in want.items():
        seen(f"{p}.{name}", got[name] == expected, f"trainer arguments: {name} {got[name]!r}")


def precision_said(seen: Seen, events: list[dict[str, Any]], key: str = "train.precision", stage: str | None = None,
                   wanted: str = "bf16") -> None:
    """`wanted` reached the run: on a CPU, bf16 trains in fp32 and a note says so (on a GPU: bf16)."""
    start = next(e for e in events if e["event"] == "start" and (stage is None or e.get("stage") == stage))
    fallback = wanted != "fp32" and not torch.cuda.is_available()
    seen(key, start["requested_precision"] == wanted and (not fallback or has_note(events, f"precision {wanted}", "fp32")),
         f"the start event records {wanted} asked for (on CPU a note says it trains in fp32)")


def stopped_early(seen: Seen, result: Any, key: str = "train.early_stopping") -> None:
    seen(key, result.stopped_early and result.steps == 2,
         f"stopped at step {result.steps} of 4: no evaluation improved by min_delta 100 (patience 1)")


# ---------------------------------------------------------------------------------------------
# text.sft: classification (Trainer), generation and extraction (TRL SFTTrainer)


TICKETS = (("train", ticket_rows(120, 1)), ("val", ticket_rows(30, 2)), ("test", ticket_rows(30, 3)))
RELABELLED = ("account", "billing", "bug")  # the tiny BERT's head is billing, bug, account
PRESPLIT = 'train "train.jsonl"; val "val.jsonl"; test "test.jsonl"; slice email where channel == "email"'


def ticket_folder(root: Path) -> Path:
    """Tickets under other column names (`body`, `category`) in train/val/test.jsonl."""
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in TICKETS:
        F.write_jsonl(root / f"{name}.jsonl", [{"body": r["text"], "category": r["label"], "channel": r["channel"]}
                                                for r in rows])
    return root


def generation_folder(root: Path, rows: Callable[[int, int], list[dict[str, Any]]], n: int = 16) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, count, seed in (("train", n, 1), ("val", 4, 2), ("test", 4, 3)):
        F.write_jsonl(root / f"{name}.jsonl", rows(count, seed))
    (root / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    return root


def _sft_distributed(seen: Seen, root: Path, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`gpus 2; strategy ddp`: the training node runs as two torchrun processes, whose Trainer takes
    DDP over gloo on the CPU (tests/runtime/test_ddp.py runs them)."""
    from types import SimpleNamespace

    from ftc.compiler.plan import build_plan
    from ftc.runtime import launch

    ctx = context(ticket_folder(root), spec(f'modality text; base "{base}"; task classification; '
                                            'labels ["billing", "bug", "account"]', "lora { rank 2 }",
                                            'sft { input "body"; target "category" }', PRESPLIT,
                                            "steps 1; batch_size 4; precision fp32", "metric loss; gate loss <= 99 on test",
                                            "budget { gpus 2; strategy ddp }"), allow=("FT203",))
    node = build_plan(ctx.checked).node("train")
    state = SimpleNamespace(run_dir=root / "run", device="cpu", max_steps=None, resume=False, time_limit=None)
    cmd = launch.command(node, state)
    seen("budget.gpus", cmd[cmd.index("--nproc-per-node") + 1] == "2" and node.params["distributed"]["global_batch"] == 8,
         f"torchrun starts 2 processes: {' '.join(cmd[1:8])}")
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it in each process
    ddp = hf._distributed(cuda=False)
    monkeypatch.delenv("WORLD_SIZE")
    seen("budget.strategy", cmd[cmd.index("-m", 3) + 1] == "ftc.runtime.rank" and ddp["ddp_backend"] == "gloo",
         "each process trains the node under DDP (gloo on the CPU)")


def test_text_sft_applies_every_key_it_honours(tmp_path: Path, tiny_bert: Path, tiny_gpt2: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Seen("text.sft")
    _sft_distributed(seen, tmp_path / "ddp", tiny_bert, monkeypatch)
    _sft_classifier(seen, tmp_path / "classifier", tiny_bert, monkeypatch)
    _sft_extraction(seen, tmp_path / "extraction", tiny_gpt2, monkeypatch)
    _sft_chat(seen, tmp_path / "chat", tiny_gpt2, monkeypatch)
    methods = (("bert", "adapters", "classification", ""), ("bert", "full", "classification", ""),
               ("gpt2", "qlora", "generation", ""), ("gpt2", "lora", "generation", "quantize 4bit"))
    for arch, kind, task, extra in methods:
        base = tiny_bert if arch == "bert" else tiny_gpt2
        root = ticket_folder(tmp_path / kind) if arch == "bert" else generation_folder(tmp_path / kind, gen_rows)
        labels = 'labels ["billing", "bug", "account"]' if task == "classification" else ""
        signal = 'sft { input "body"; target "category" }' if arch == "bert" else 'sft { input "prompt"; target "answer" }'
        block = method_block(kind, arch, "classifier" if task == "classification" else None)
        if extra:
            block = "lora { rank 2 }"
        ctx = context(root, spec(f'modality text; base "{base}"; task {task}; {labels} {extra}', block, signal, PRESPLIT,
                                 "steps 1; batch_size 4; precision fp32", "metric loss; gate loss <= 99 on test"),
                      allow=("FT203",))
        quant = spy(monkeypatch, loading, "quantization_config")
        got = attached(monkeypatch, text, "attach_method")
        drops = dropouts_in_training(monkeypatch)
        text.fit_sft(ctx)
        if extra:
            seen("model.quantize", quant[-1][2].load_in_4bit and quantised(got[0].model), "the base loaded in 4 bits")
        else:
            method_applied(seen, kind, arch, got[0], quant[-1][2], dropouts=drops[-1])
    seen.covers()


def hub_base(monkeypatch: pytest.MonkeyPatch, root: Path, repo: str, folder: Path) -> Path:
    """`folder` as `hf:repo` in a Hugging Face cache under `root`, at two commits (`main` is the
    first): returns the snapshot of the second, REVISION, which the specs pin."""
    from tests.hf_cache import cache_model

    cache = root / "hf-cache"
    cache_model(cache, repo, folder, "f" * 40)
    snapshot = cache_model(cache, repo, folder, REVISION, refs=())
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return snapshot.resolve()


REVISION = "0123456789abcdef0123456789abcdef01234567"


def revision_applied(seen: Seen, loaded: Path, snapshot: Path) -> None:
    seen("model.revision", loaded.resolve() == snapshot, f"the base loaded from the snapshot of {REVISION[:7]}")


def _sft_classifier(seen: Seen, root: Path, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LoRA on the classifier, every optimisation key, labels in another order, length and dedup;
    the base from the Hugging Face cache at a pinned revision."""
    ticket_folder(root)
    snapshot = hub_base(monkeypatch, root, "org/tiny-bert", base)
    labels = ", ".join(json.dumps(x) for x in RELABELLED)
    ctx = context(root, spec(
        f'modality text; base "hf:org/tiny-bert"; revision "{REVISION[:7]}"; task classification; labels [{labels}]; '
        "trust_remote_code true",
        method_block("lora", "bert"), 'sft { input "body"; target "category" }',
        f"{PRESPLIT}; max_length 7 drop; dedup exact", FULL_TRAIN,
        "metric f1 weighted; metric accuracy; gate f1 >= 0.1 on test; latency_warmup 2"))
    loads = loaded_with(monkeypatch)
    trainers = spy(monkeypatch, text, "quiet")
    got = attached(monkeypatch, text, "attach_method")
    drops = dropouts_in_training(monkeypatch)
    result = text.train_sft(ctx)
    trainer = trainers[0][2]
    model = trainer.model
    method_applied(seen, "lora", "bert", got[0], dropouts=drops[-1])
    seen("method.lora.merge", result.merged_dir is not None and (result.merged_dir / "model.safetensors").is_file(),
         f"merged model at {result.merged_dir}")
    trainer_args_applied(seen, trainer.args, FULL)
    stopped_early(seen, result)
    precision_said(seen, events_of(ctx))
    path, kwargs = loads[0]
    seen("model.base", Path(path).resolve() == snapshot and Path(artifact_base(result.model_dir)).resolve() == snapshot,
         f"loaded from {path}")
    revision_applied(seen, Path(path), snapshot)
    seen("model.task", type(model.get_base_model()).__name__ == "BertForSequenceClassification", "a sequence classifier")
    seen("model.modality", type(model.get_base_model()).__module__.startswith("transformers."), "a transformers model")
    seen("model.trust_remote_code", kwargs["trust_remote_code"] is True, "from_pretrained(trust_remote_code=True)")
    seen("model.labels", model.config.id2label == dict(enumerate(RELABELLED)), f"id2label {model.config.id2label}")
    tok = trainer.processing_class
    fit = [r for r in ctx.parts["train"].rows if len(tok(r["body"])["input_ids"]) <= 7]
    seen("data.max_length", 0 < len(fit) < len(ctx.parts["train"].rows) and len(trainer.train_dataset) == len(fit)
         and has_note(events_of(ctx), "over 7 tokens"),
         f"{len(trainer.train_dataset)} of {len(ctx.parts['train'].rows)} rows fit 7 tokens; the rest dropped")
    label2id = {x: i for i, x in enumerate(RELABELLED)}
    seen("signal.sft.input signal.sft.target",
         trainer.train_dataset["labels"] == [label2id[r["category"]] for r in fit]
         and tok.decode(trainer.train_dataset[0]["input_ids"], skip_special_tokens=True) == fit[0]["body"],
         "each row's `body` is the input and its `category` the label")
    seen("data.dedup", dedup_applied(ctx), "the dedup node removes a repeated training row")
    emails = sum(r["channel"] == "email" for r in ctx.parts["test"].rows)
    evaluation_applied(seen, ctx, text_eval, {"f1": "f1.weighted", "accuracy": "accuracy"}, emails, 2)


def _sft_extraction(seen: Seen, root: Path, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompt tuning on extraction: epochs, packing, max_length drop, the output schema."""
    generation_folder(root, gen_rows, 24)
    ctx = context(root, spec(
        f'modality text; base "{base}"; task extraction; output_schema "schema.json"', method_block("prompt_tuning", "gpt2"),
        'sft { input "prompt"; target "answer" }', f"{PRESPLIT}; max_length 52 drop",
        "epochs 2; batch_size 8; learning_rate 1e-3; precision fp32; seed 3; packing true",
        "metric exact_match; metric format_validity; gate exact_match >= 0.0 on test"))
    from ftc.runtime import metrics
    from ftc.runtime.backends import tokcache

    trainers = spy(monkeypatch, text, "quiet")
    given = spy(monkeypatch, tokcache, "sft_trainer")
    got = attached(monkeypatch, text, "attach_method")
    drops = dropouts_in_training(monkeypatch)
    text.fit_sft(ctx)
    trainer = trainers[0][2]
    method_applied(seen, "prompt_tuning", "gpt2", got[0], dropouts=drops[-1])
    seen("train.epochs", trainer.args.num_train_epochs == 2 and trainer.state.epoch == pytest.approx(2),
         f"trained {trainer.state.epoch} epochs")
    rows = given[0][1]["train_dataset"]
    tok = trainer.processing_class
    fit = [r for r in ctx.parts["train"].rows if len(tok(r["prompt"] + r["answer"])["input_ids"]) + 1 <= 52]
    seen("data.max_length", 0 < len(fit) < len(ctx.parts["train"].rows) and len(rows) == len(fit)
         and trainer.args.max_length == 52, f"{len(rows)} rows of {len(ctx.parts['train'].rows)} fit 52 tokens")
    seen("signal.sft.input signal.sft.target", rows[0] == {"prompt": fit[0]["prompt"], "completion": fit[0]["answer"]},
         "prompt/completion rows from `prompt` and `answer`")
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    seen("train.packing", trainer.args.packing is True and set(lengths[:-1]) == {52} and min(
        len(tok(r["prompt"] + r["answer"])["input_ids"]) for r in fit) < 51,
         f"rows of 50-52 tokens packed into sequences of exactly 52: {lengths}")
    schemas = spy(monkeypatch, metrics, "format_valid")
    result = text_eval.evaluate(ctx, None, "test")
    seen("model.output_schema", schemas and all(call[0][1] == SCHEMA for call in schemas)
         and "format_validity" in result.metrics, "format_validity checks replies against schema.json")
    seen("model.task", type(trainer.model.get_base_model()).__name__ == "GPT2LMHeadModel", "a causal LM")


def _sft_chat(seen: Seen, root: Path, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefix tuning on chat messages."""
    generation_folder(root, chat_rows)
    ctx = context(root, spec(
        f'modality text; base "{base}"; task generation', method_block("prefix_tuning", "gpt2"),
        'sft { messages "messages" }', PRESPLIT, "steps 1; batch_size 4; learning_rate 1e-3; precision fp32",
        "metric loss; gate loss <= 99 on test"))
    from ftc.runtime.backends import tokcache

    trainers = spy(monkeypatch, text, "quiet")
    given = spy(monkeypatch, tokcache, "sft_trainer")
    got = attached(monkeypatch, text, "attach_method")
    drops = dropouts_in_training(monkeypatch)
    text.fit_sft(ctx)
    method_applied(seen, "prefix_tuning", "gpt2", got[0], dropouts=drops[-1])
    rows = given[0][1]["train_dataset"]
    seen("signal.sft.messages", rows[0] == {"messages": ctx.parts["train"].rows[0]["messages"]}
         and trainers[0][2].args.assistant_only_loss is True, "chat rows, the loss on assistant turns")


# ---------------------------------------------------------------------------------------------
# text.dpo


def renamed_pairs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Preference pairs under other column names: question / good / bad (and topic)."""
    return [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"], "topic": r["topic"]}
            for r in F.preference_rows(n, seed)]


@pytest.fixture(scope="module")
def gpt2_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pairs.jsonl (40 renamed pairs), prompts.jsonl (policy prompts), schema.json and a tiny GPT-2 over their text."""
    root = tmp_path_factory.mktemp("pairs")
    pairs = renamed_pairs(40)
    prompts = [{"question": r["prompt"], "reference": r["reference"], "topic": "export"} for r in F.prompt_rows(30)]
    F.write_jsonl(root / "pairs.jsonl", pairs)
    F.write_jsonl(root / "prompts.jsonl", prompts)
    (root / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    texts = [v for r in pairs + prompts for v in r.values() if isinstance(v, str)]
    F.make_tiny_gpt2(root / "model", texts)
    return root


def pair_length(tok: Any, row: dict[str, Any]) -> int:
    """Tokens of a pair's longer side, as `max_length N drop` counts them (preference_common.fits)."""
    prompt = row["question"] + "\n"
    return max(len(tok(prompt + row[side])["input_ids"]) + 1 for side in ("good", "bad"))


def median_length(folder: Path, rows: list[dict[str, Any]]) -> int:
    tok = loading.load_tokenizer(folder / "model")
    return sorted(pair_length(tok, r) for r in rows)[len(rows) // 2]


def project(root: Path, shared: Path, *names: str) -> Path:
    """A fresh spec folder beside `shared`'s data and model (symlinked)."""
    root.mkdir(parents=True)
    for name in names:
        (root / name).symlink_to(shared / name)
    return root


DPO_OMIT = ("bias", "dropout")  # not applied by DPO (compiler/honoured.py says why)
DPO_SIGNAL = 'dpo { prompt "question"; chosen "good"; rejected "bad"; beta 0.3 }'


def test_text_dpo_applies_every_key_it_honours(tmp_path: Path, gpt2_pairs: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.runtime import metrics
    from ftc.runtime.backends import preference
    from ftc.runtime.backends import preference_common as pc

    seen = Seen("text.dpo")
    root = project(tmp_path / "lora", gpt2_pairs, "pairs.jsonl", "schema.json")
    snapshot = hub_base(monkeypatch, root, "org/tiny-gpt2", gpt2_pairs / "model")
    limit = median_length(gpt2_pairs, renamed_pairs(40))
    ctx = context(root, spec(
        f'modality text; base "hf:org/tiny-gpt2"; revision "{REVISION[:7]}"; task generation; trust_remote_code true; '
        'output_schema "schema.json"', method_block("lora", "gpt2", omit=DPO_OMIT), DPO_SIGNAL,
        f'source "pairs.jsonl"; split 60/20/20; max_length {limit} drop; dedup exact; slice export where topic == "export"',
        FULL_TRAIN, "metric accuracy; metric format_validity; gate accuracy >= 0.0 on test; latency_warmup 2"))
    loads = loaded_with(monkeypatch)
    args = spy(monkeypatch, hf, "training_arguments")
    trainers = spy(monkeypatch, pc, "fit")
    fits = spy(monkeypatch, pc, "fits")
    got = attached(monkeypatch, text, "attach_method")
    drops = dropouts_in_training(monkeypatch)
    result = preference.train_dpo(ctx)
    trainer_args_applied(seen, args[0][2], FULL)
    stopped_early(seen, result)
    precision_said(seen, events_of(ctx))
    method_applied(seen, "lora", "gpt2", got[0], omit=DPO_OMIT, dropouts=drops[-1])
    seen("method.lora.merge", result.merged_dir is not None and (result.merged_dir / "model.safetensors").is_file(),
         f"merged model at {result.merged_dir}")
    path, kwargs = loads[0]
    seen("model.base", Path(path).resolve() == snapshot, f"loaded from {path}")
    revision_applied(seen, Path(path), snapshot)
    seen("model.trust_remote_code", kwargs["trust_remote_code"] is True, "from_pretrained(trust_remote_code=True)")
    seen("model.task model.modality", type(trainers[0][0][1].model.get_base_model()).__name__ == "GPT2LMHeadModel",
         "a transformers causal LM")
    seen("signal.dpo.beta", args[0][2].beta == 0.3, f"DPOConfig beta {args[0][2].beta}")
    given, kept = fits[0][0][0], fits[0][2]
    first = ctx.parts["train"].rows[0]
    seen("signal.dpo.prompt signal.dpo.chosen signal.dpo.rejected",
         given[0] == {"prompt": first["question"] + "\n", "chosen": first["good"], "rejected": first["bad"]},
         "pairs from `question`, `good` and `bad`")
    seen("data.max_length", 0 < len(kept) < len(given) and args[0][2].max_length == limit
         and has_note(events_of(ctx), f"over {limit} tokens"), f"{len(kept)} of {len(given)} pairs fit {limit} tokens")
    seen("data.dedup", dedup_applied(ctx), "the dedup node removes a repeated training pair")
    schemas = spy(monkeypatch, metrics, "format_valid")
    exports = sum(r["topic"] == "export" for r in ctx.parts["test"].rows)
    evaluation_applied(seen, ctx, preference, {"accuracy": "accuracy", "format_validity": "format_validity"}, exports, 2)
    seen("model.output_schema", schemas and all(call[0][1] == SCHEMA for call in schemas),
         "format_validity checks replies against schema.json")
    for kind, extra, train in (("full", "", "epochs 2; batch_size 8"), ("adapters", "", "steps 1; batch_size 4"),
                               ("prompt_tuning", "quantize 4bit", "steps 1; batch_size 4"),
                               ("prefix_tuning", "", "steps 1; batch_size 4"), ("qlora", "", "steps 1; batch_size 4")):
        where = project(tmp_path / kind, gpt2_pairs, "pairs.jsonl", "model")
        ctx = context(where, spec(f'modality text; base "model"; task generation; {extra}',
                                  method_block(kind, "gpt2", omit=DPO_OMIT), DPO_SIGNAL, 'source "pairs.jsonl"; split 60/20/20', f"{train}; precision fp32",
                                  "metric accuracy; gate accuracy >= 0.0 on test"), allow=("FT203",))
        quant = spy(monkeypatch, loading, "quantization_config")
        got = attached(monkeypatch, text, "attach_method")
        drops = dropouts_in_training(monkeypatch)
        trainers = spy(monkeypatch, pc, "fit")
        preference.fit_dpo(ctx)
        method_applied(seen, kind, "gpt2", got[0], quant[-1][2], omit=DPO_OMIT, dropouts=drops[-1])
        if kind == "full":
            trainer = trainers[0][0][1]
            seen("train.epochs", trainer.args.num_train_epochs == 2 and trainer.state.epoch == pytest.approx(2),
                 f"trained {trainer.state.epoch} epochs")
        if extra:
            seen("model.quantize", quant[-1][2].load_in_4bit and quantised(got[0].model), "the base loaded in 4 bits")
    seen.covers()


# ---------------------------------------------------------------------------------------------
# text.rlhf: a reward model (TRL RewardTrainer), then the policy (RLOO/GRPO) scored by it


RLHF_OMIT = ("bias", "dropout")  # not applied by the preference trainers (compiler/honoured.py says why)
PROMPTS = 'source "prompts.jsonl"; split 70/15/15; slice export where topic == "export"'
REWARD_PAIRS = 'prompt "question"; chosen "good"; rejected "bad"'


def rlhf_signal(reward: str = "", policy: str = "") -> str:
    return f"rlhf {{\n    reward {{ {REWARD_PAIRS}; {reward} }}\n    policy {{ {policy} }}\n  }}"


def stage_dedup_applied(ctx: TrainContext) -> bool:
    """As dedup_applied, for the reward stage's own train split."""
    from ftc.compiler.plan import build_plan
    from ftc.runtime.executor import LocalExecutor, RunState

    plan = build_plan(ctx.checked)
    node = next(n for n in plan.nodes if n.kind == "dedup")
    state = RunState(plan, ctx.checked, ctx.run_dir, lambda e: None)
    train = ctx.stage_parts["train"]
    copy = type(train)(train.name, [*train.rows, dict(train.rows[0])], [*train.paths, train.paths[0]],
                       [*train.locations, train.locations[0]], train.location_kind)
    state.parts, state.stage_parts = dict(ctx.parts), {**ctx.stage_parts, "train": copy}
    LocalExecutor().run(node, state)
    return len(state.stage_parts["train"].rows) == len(train.rows)


def stage_split(path: Path, fields: dict[str, str], ratios: tuple[float, ...], seed: int, stratify: str) -> Any:
    """The train part the compiler's split gives the file (read as jsonl, renamed by `fields`)."""
    from ftc.compiler.data.contracts import apply_mapping
    from ftc.compiler.data.readers import read_table
    from ftc.compiler.data.splits import split_source

    table = read_table(path, path.name, "jsonl")
    table.rows = apply_mapping(table.rows, fields)
    return split_source(table, ratios, "random", None, seed, stratify)[0]["train"].rows


def early_stopping_callback(trainer: Any) -> Any:
    return next((cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "EarlyStoppingCallback"), None)


def test_text_rlhf_applies_every_key_it_honours(tmp_path: Path, gpt2_pairs: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Seen("text.rlhf")
    _rlhf_stage_reward_train(seen, tmp_path / "reward-train", gpt2_pairs, monkeypatch)
    _rlhf_stage_policy_train(seen, tmp_path / "policy-train", gpt2_pairs, monkeypatch)
    _rlhf_methods(seen, tmp_path, gpt2_pairs, monkeypatch)
    seen.covers()


def _rlhf_train(monkeypatch: pytest.MonkeyPatch, ctx: TrainContext) -> dict[str, Any]:
    """Both stages, with what they were given: arguments, trainers, fits, attached models."""
    from ftc.runtime.backends import preference
    from ftc.runtime.backends import preference_common as pc
    from ftc.runtime.backends import reward as reward_module

    got = {"args": spy(monkeypatch, hf, "training_arguments"), "trainers": spy(monkeypatch, pc, "fit"),
           "fits": spy(monkeypatch, pc, "fits"), "attached": attached(monkeypatch, text, "attach_method"),
           "loads": loaded_with(monkeypatch), "classifier": spy(monkeypatch, reward_module, "_base_classifier"),
           "quant": spy(monkeypatch, loading, "quantization_config"), "drops": dropouts_in_training(monkeypatch)}
    got["reward"] = preference.train_reward(ctx)
    got["policy"] = preference.train_policy(ctx, got["reward"].model_dir)
    return got


STAGE_OPTIMIZER = "adamw_bnb_8bit" if torch.cuda.is_available() else "adamw_torch"  # adamw_8bit needs CUDA


def _rlhf_stage_reward_train(seen: Seen, root: Path, shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LoRA; the reward stage's own data (renamed, split, seeded, stratified, cut) and train block;
    the policy on the spec's train block, GRPO with its own prompt field, generations and KL."""
    from ftc.runtime import metrics
    from ftc.runtime.backends import preference

    project(root, shared, "prompts.jsonl", "schema.json")
    pairs = [{"q": r["question"], "good": r["good"], "bad": r["bad"], "topic": r["topic"]} for r in renamed_pairs(40)]
    F.write_jsonl(root / "pairs.data", pairs)
    snapshot = hub_base(monkeypatch, root, "org/tiny-gpt2", shared / "model")
    limit = median_length(shared, renamed_pairs(40))
    reward_data = (f'data {{ format jsonl; source "pairs.data"; split 60/20/20; seed 5; stratify "topic"; '
                   f'max_length {limit} drop; dedup exact; fields {{ question "q" }} }}')
    ctx = context(root, spec(
        f'modality text; base "hf:org/tiny-gpt2"; revision "{REVISION[:7]}"; task generation; trust_remote_code true; '
        'output_schema "schema.json"', method_block("lora", "gpt2", omit=RLHF_OMIT),
        rlhf_signal(f"{reward_data}; train {{ {STAGE_TRAIN}; early_stopping patience 2 on val.loss }}",
                    'algorithm grpo; prompt "question"; generations 3; kl_coef 0.2'),
        f"{PROMPTS}; max_length 40; dedup exact", FULL_TRAIN,
        "metric loss; metric format_validity; gate loss <= 99 on test; latency_warmup 2"))
    got = _rlhf_train(monkeypatch, ctx)
    (reward_args, policy_args), (reward_trainer, policy_trainer) = [c[2] for c in got["args"]], [
        c[0][1] for c in got["trainers"]]
    # the reward stage: its own train block and data
    trainer_args_applied(seen, reward_args, {**STAGE, "optimizer": STAGE_OPTIMIZER}, "signal.rlhf.reward.train")
    precision_said(seen, events_of(ctx), "signal.rlhf.reward.train.precision", "reward", "fp32")
    es = early_stopping_callback(reward_trainer)
    seen("signal.rlhf.reward.train.early_stopping", es is not None and es.early_stopping_patience == 2
         and es.early_stopping_threshold == 0 and reward_args.metric_for_best_model == "loss",
         "the reward trainer stops early on val loss, patience 2")
    given, kept = got["fits"][0][0][0], got["fits"][0][2]
    train = ctx.stage_parts["train"].rows
    seen("signal.rlhf.reward.prompt signal.rlhf.reward.chosen signal.rlhf.reward.rejected",
         given[0] == {"prompt": train[0]["question"] + "\n", "chosen": train[0]["good"], "rejected": train[0]["bad"]},
         "reward pairs from `question`, `good` and `bad`")
    seen("signal.rlhf.reward.data.fields", "question" in train[0] and "q" not in train[0]
         and train[0]["question"] in {r["q"] for r in pairs},
         "the stage's rows renamed q -> question")
    expected = stage_split(root / "pairs.data", {"question": "q"}, (0.6, 0.2, 0.2), 5, "topic")
    seen("signal.rlhf.reward.data.format signal.rlhf.reward.data.source signal.rlhf.reward.data.split "
         "signal.rlhf.reward.data.seed signal.rlhf.reward.data.stratify",
         train == expected and 20 <= len(train) <= 28 and train != stage_split(root / "pairs.data", {"question": "q"},
                                                                       (0.6, 0.2, 0.2), 0, "topic"),
         f"the reward trains on the seed-5 stratified 60% of pairs.data (read as jsonl), not the seed-0 one "
         f"({len(train)} rows)")
    seen("signal.rlhf.reward.data.max_length", got["fits"][0][0][2] == limit and 0 < len(kept) < len(given),
         f"{len(kept)} of {len(given)} reward pairs fit {limit} tokens (the spec's data says 40)")
    seen("signal.rlhf.reward.data.dedup", stage_dedup_applied(ctx), "the dedup node removes a repeated reward pair")
    # the policy: the spec's train block, its own settings
    trainer_args_applied(seen, policy_args, FULL)
    precision_said(seen, events_of(ctx), stage="policy (grpo)")
    seen("signal.rlhf.policy.algorithm", type(policy_trainer).__name__ == "FtcGRPOTrainer", type(policy_trainer).__name__)
    seen("signal.rlhf.policy.generations", policy_args.num_generations == 3, f"num_generations {policy_args.num_generations}")
    seen("signal.rlhf.policy.kl_coef", policy_args.beta == 0.2, f"beta {policy_args.beta}")
    prompts = policy_trainer.train_dataset["prompt"]
    seen("signal.rlhf.policy.prompt", prompts[0] == ctx.parts["train"].rows[0]["question"] + "\n",
         "the policy's prompts are the `question` field")
    seen("data.max_length", policy_args.max_completion_length == 20, "replies of 40 // 2 tokens within max_length 40")
    method_applied(seen, "lora", "gpt2", got["attached"][0], omit=RLHF_OMIT)
    method_applied(seen, "lora", "gpt2", got["attached"][1], omit=RLHF_OMIT)
    seen("method.lora.merge", got["policy"].merged_dir is not None, f"the policy merged at {got['policy'].merged_dir}")
    path, kwargs = got["loads"][0]
    seen("model.base", Path(path).resolve() == snapshot == Path(got["classifier"][0][0][0]).resolve(),
         f"both stages load {path}")
    revision_applied(seen, Path(path), snapshot)
    seen("model.trust_remote_code", kwargs["trust_remote_code"] is True and got["classifier"][0][0][1] is True,
         "both stages load with trust_remote_code")
    seen("model.task model.modality", type(policy_trainer.model.get_base_model()).__name__ == "GPT2LMHeadModel",
         "a transformers causal LM")
    seen("data.dedup", dedup_applied(ctx), "the dedup node removes a repeated policy prompt")
    schemas = spy(monkeypatch, metrics, "format_valid")
    exports = sum(r["topic"] == "export" for r in ctx.parts["test"].rows)
    evaluation_applied(seen, ctx, preference, {"loss": "loss", "format_validity": "format_validity"}, exports, 2)
    seen("model.output_schema", schemas and all(call[0][1] == SCHEMA for call in schemas),
         "format_validity checks replies against schema.json")


def _rlhf_stage_policy_train(seen: Seen, root: Path, shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full fine-tune; the reward stage on pre-split files and the spec's train block (it stops
    early); the policy's own train block."""
    project(root, shared, "prompts.jsonl", "model")
    pairs = renamed_pairs(40)
    for name, rows in (("rtrain", pairs[:24]), ("rval", pairs[24:32]), ("rtest", pairs[32:])):
        F.write_jsonl(root / f"{name}.jsonl", rows)
    policy_train = STAGE_TRAIN
    ctx = context(root, spec(
        'modality text; base "model"; task generation', method_block("full", "gpt2"),
        rlhf_signal('data { train "rtrain.jsonl"; val "rval.jsonl"; test "rtest.jsonl" }',
                    f'prompt "question"; train {{ {policy_train} }}'),
        PROMPTS, FULL_TRAIN, "metric loss; gate loss <= 99 on test"), allow=("FT203",))
    got = _rlhf_train(monkeypatch, ctx)
    policy_args = got["args"][1][2]
    trainer_args_applied(seen, policy_args, {**STAGE, "optimizer": STAGE_OPTIMIZER}, "signal.rlhf.policy.train")
    precision_said(seen, events_of(ctx), "signal.rlhf.policy.train.precision", "policy (rloo)", "fp32")
    stopped_early(seen, got["reward"])  # the spec's early_stopping, in the reward stage
    given = got["fits"][0][0][0]
    seen("signal.rlhf.reward.data.train signal.rlhf.reward.data.val signal.rlhf.reward.data.test",
         [r["chosen"] for r in given] == [r["good"] for r in pairs[:24]]
         and sorted(ctx.stage_parts) == ["test", "train", "val"] and len(ctx.stage_parts["val"].rows) == 8,
         "the reward trains on rtrain.jsonl, validates on rval.jsonl")
    method_applied(seen, "full", "gpt2", got["attached"][1], dropouts=got["drops"][-1])


def _rlhf_methods(seen: Seen, tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adapters and QLoRA (one step per stage; prompt and prefix tuning do not run through RLHF:
    compiler/honoured.py RLHF_FAILS), a quantised base; epochs reach both stages' arguments."""
    cases = (("adapters", "", "epochs 2", "", ""), ("qlora", "", "", "", ""), ("lora", "quantize 4bit", "", "epochs 3", "epochs 4"))
    pairs = renamed_pairs(40)
    for kind, extra, train, reward_train, policy_train in cases:
        root = project(tmp_path / kind, shared, "prompts.jsonl", "model")
        F.write_jsonl(root / "pairs.jsonl", pairs)
        reward = 'data { source "pairs.jsonl"; split 80/20 }' + (f"; train {{ {reward_train} }}" if reward_train else "")
        policy = 'prompt "question"' + (f"; train {{ {policy_train} }}" if policy_train else "")
        block = "lora { rank 2 }" if extra else method_block(kind, "gpt2", omit=RLHF_OMIT)
        ctx = context(root, spec(f'modality text; base "model"; task generation; {extra}', block,
                                 rlhf_signal(reward, policy),
                                 PROMPTS, f"batch_size 4; precision fp32; {train}",
                                 "metric loss; gate loss <= 99 on test"), max_steps=1)
        got = _rlhf_train(monkeypatch, ctx)
        for stage in (0, 1) if not extra else ():
            method_applied(seen, kind, "gpt2", got["attached"][stage], got["quant"][-1][2], omit=RLHF_OMIT,
                           dropouts=got["drops"][stage])
        epochs = [c[2].num_train_epochs for c in got["args"]]
        if train:
            seen("train.epochs", epochs == [2, 2], f"both stages' arguments: {epochs} epochs")
        if reward_train:
            seen("signal.rlhf.reward.train.epochs signal.rlhf.policy.train.epochs", epochs == [3, 4],
                 f"the stages' own epochs: {epochs}")
        if extra:
            seen("model.quantize", all(quantised(a.model) for a in got["attached"]), "both stages load the base in 4 bits")


# ---------------------------------------------------------------------------------------------
# ftc's own training loop (runtime/backends/loop.py): text contrastive, vision, multimodal


def loop_spies(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """What the loop did: its instances (as each run starts), the permutations it drew (n, seed,
    epoch), the clipping norm of each optimizer step, the micro-batches of each step."""
    from ftc.runtime.backends import loop

    out: dict[str, list[Any]] = {"loops": [], "perms": [], "clips": [], "steps": []}
    run, step = loop.Loop.run, loop.Loop._step

    def on_run(self: Any) -> Any:
        out["loops"].append(self)
        return run(self)

    def on_step(self: Any, group: list[list[Any]], first: int) -> float:
        out["steps"].append((len(group), len(group[0])))
        return float(step(self, group, first))

    monkeypatch.setattr(loop.Loop, "run", on_run)
    monkeypatch.setattr(loop.Loop, "_step", on_step)
    perms = spy(monkeypatch, loop, "_permutation")
    clips = spy(monkeypatch, loop, "optimizer_step")
    out["perms"], out["clips"] = perms, clips
    return out


def loop_applied(seen: Seen, spies: dict[str, list[Any]], events: list[dict[str, Any]]) -> Any:
    """FULL_TRAIN's optimisation keys in ftc's loop; returns the loop."""
    lp = spies["loops"][0]
    lrs = [e["lr"] for e in events if e["event"] == "step"]
    seen("train.steps", lp.total == 4, f"the loop plans {lp.total} steps")
    seen("train.early_stopping", lp.state.stopped_early and lp.state.step == 2,
         f"stopped at step {lp.state.step} of 4: no evaluation improved by min_delta 100 (patience 1)")
    seen("train.learning_rate", lp.optimizer.defaults["lr"] == 3e-3, "the optimizer's lr 3e-3")
    seen("train.warmup", lrs[0] == pytest.approx(3e-3), f"step 1 ends a one-step warm-up at the peak: lr {lrs[0]:.3g}")
    seen("train.schedule", lrs[1] == pytest.approx(3e-3 * 0.75), f"step 2: cosine decay to {lrs[1]:.3g} (linear: 2e-3)")
    seen("train.batch_size train.grad_accum", spies["steps"][0] == (2, 4), f"micro-batches per step: {spies['steps'][0]}")
    seen("train.optimizer", isinstance(lp.optimizer, torch.optim.SGD), type(lp.optimizer).__name__)
    seen("train.weight_decay", lp.optimizer.param_groups[0]["weight_decay"] == 0.01, "weight_decay 0.01")
    seen("train.max_grad_norm", {c[0][4] for c in spies["clips"]} == {0.5}, "gradients clipped at 0.5")
    seen("train.seed", {c[0][1] for c in spies["perms"]} == {11}, "batches drawn from seed 11")
    seen("train.checkpoints", lp.every == 1 and lp.keep == 1
         and [e["step"] for e in events if e["event"] == "eval"] == [1, 2], "a checkpoint (and validation) every step, keep 1")
    cpu = not torch.cuda.is_available()
    seen("train.precision", lp.precision == ("fp32" if cpu else "bf16") and (not cpu or has_note(events, "precision bf16")),
         f"bf16 asked for: the loop trains in {lp.precision} (said on CPU)")
    return lp


# ---------------------------------------------------------------------------------------------
# text.contrastive


@pytest.fixture(scope="module")
def encoder_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """triples.jsonl (q / pos / neg, a third of the positives longer, a `half` to slice on) and a
    tiny BERT encoder over their text."""
    root = tmp_path_factory.mktemp("triples")
    rows = [{"q": r["query"], "pos": r["positive"] + (" in the blue folder" if i % 3 == 0 else ""), "neg": r["negative"],
             "half": "first" if i < 30 else "second"} for i, r in enumerate(F.contrastive_rows(60, negatives=True))]
    F.write_jsonl(root / "triples.jsonl", rows)
    F.make_tiny_bert(root / "model", [v for r in rows for v in r.values()])
    return root


CONTRASTIVE = 'contrastive { anchor "q"; positive "pos"; negative "neg"; temperature 0.2 }'
TRIPLES = 'source "triples.jsonl"; split 70/15/15; slice first where half == "first"'


def triple_length(tok: Any, row: dict[str, Any]) -> int:
    return max(len(tok(row[k])["input_ids"]) for k in ("q", "pos", "neg"))


def test_text_contrastive_applies_every_key_it_honours(tmp_path: Path, encoder_pairs: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers
    from ftc.runtime.backends import embedding, embedding_loop

    seen = Seen("text.contrastive")
    root = project(tmp_path / "lora", encoder_pairs, "triples.jsonl")
    snapshot = hub_base(monkeypatch, root, "org/tiny-encoder", encoder_pairs / "model")
    rows = [json.loads(line) for line in (encoder_pairs / "triples.jsonl").read_text().splitlines()]
    tok = loading.load_tokenizer(encoder_pairs / "model")
    limit = min(triple_length(tok, r) for r in rows)  # a third of the positives are longer
    ctx = context(root, spec(
        f'modality text; base "hf:org/tiny-encoder"; revision "{REVISION[:7]}"; task embedding; trust_remote_code true',
        method_block("lora", "bert", omit=("merge",)), CONTRASTIVE, f"{TRIPLES}; max_length {limit} drop; dedup exact",
        FULL_TRAIN, "metric recall_at_k 3; metric accuracy; gate recall_at_k >= 0.0 on test; latency_warmup 2"),
        allow=("FT203",))
    spies = loop_spies(monkeypatch)
    loads = spy(monkeypatch, transformers.AutoModel, "from_pretrained")
    temperatures = spy(monkeypatch, embedding_loop, "info_nce")
    got = attached(monkeypatch, embedding, "_attach")
    drops = dropouts_in_training(monkeypatch)
    result = embedding.train_contrastive(ctx)
    events = events_of(ctx)
    lp = loop_applied(seen, spies, events)
    method_applied(seen, "lora", "bert", got[0], omit=("merge",), dropouts=drops[-1])
    path, kwargs = loads[0][0][0], loads[0][1]
    seen("model.base", Path(path).resolve() == snapshot and Path(artifact_base(result.model_dir)).resolve() == snapshot,
         f"the encoder loaded from {path}")
    revision_applied(seen, Path(path), snapshot)
    seen("model.trust_remote_code", kwargs["trust_remote_code"] is True, "AutoModel.from_pretrained(trust_remote_code=True)")
    seen("model.task model.modality", type(got[0].model.get_base_model()).__name__ == "BertModel",
         "a transformers encoder without a head")
    checkpointing = got[0].model.get_base_model().is_gradient_checkpointing
    seen("train.gradient_checkpointing", checkpointing, "the encoder recomputes activations")
    train = ctx.parts["train"].rows
    fit = [r for r in train if triple_length(tok, r) <= limit]
    seen("data.max_length", lp.max_length == limit and 0 < len(lp.items) == len(fit) < len(train)
         and has_note(events, f"over {limit} tokens"), f"{len(lp.items)} of {len(train)} triples fit {limit} tokens")
    seen("signal.contrastive.anchor signal.contrastive.positive signal.contrastive.negative",
         lp.items[0] == (fit[0]["q"], fit[0]["pos"], fit[0]["neg"]), "triples from `q`, `pos` and `neg`")
    seen("signal.contrastive.temperature", {c[0][3] for c in temperatures} == {0.2}, "InfoNCE at temperature 0.2")
    seen("data.dedup", dedup_applied(ctx), "the dedup node removes a repeated training triple")
    firsts = sum(r["half"] == "first" for r in ctx.parts["test"].rows)
    result_ = evaluation_applied(seen, ctx, embedding, {"recall_at_k": "recall_at_3", "accuracy": "accuracy"}, firsts, 2)
    assert result_.extra["k"] == 3
    for kind, extra, train_ in (("full", "", "epochs 2"), ("adapters", "", "steps 1"),
                                ("prompt_tuning", "quantize 4bit", "steps 1"), ("prefix_tuning", "", "steps 1"),
                                ("qlora", "", "steps 1")):
        where = project(tmp_path / kind, encoder_pairs, "triples.jsonl", "model")
        ctx = context(where, spec(f'modality text; base "model"; task embedding; {extra}', method_block(kind, "bert"),
                                  CONTRASTIVE, TRIPLES, f"{train_}; batch_size 8; precision fp32",
                                  "metric recall_at_k 3; gate recall_at_k >= 0.0 on test"), allow=("FT203",))
        quant = spy(monkeypatch, loading, "quantization_config")
        got = attached(monkeypatch, embedding, "_attach")
        drops = dropouts_in_training(monkeypatch)
        spies = loop_spies(monkeypatch)
        embedding.fit_contrastive(ctx)
        method_applied(seen, kind, "bert", got[0], quant[-1][2], dropouts=drops[-1])
        if kind == "full":
            epochs = sorted({c[0][2] for c in spies["perms"]})
            seen("train.epochs", epochs == [0, 1], f"batches drawn for epochs {epochs}")
        if extra:
            seen("model.quantize", quant[-1][2].load_in_4bit and quantised(got[0].model), "the base loaded in 4 bits")
    seen.covers()


# ---------------------------------------------------------------------------------------------
# vision (timm)


SHADES = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200)}
VISION_LABELS = ("green", "red", "blue")  # not the base head's order


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pics/ (12 noisy squares per colour), labels.jsonl (image, kind, size) and a tiny timm ConvNeXt
    (3 classes, 32x32) whose head names its classes red, green, blue."""
    import random

    import timm
    from PIL import Image
    from timm.models import save_for_hf

    root = tmp_path_factory.mktemp("images")
    (root / "pics").mkdir()
    rng, rows = random.Random(0), []
    for kind, rgb in SHADES.items():
        for i in range(12):
            img = Image.new("RGB", (32, 32))
            img.putdata([tuple(min(255, max(0, c + rng.randint(-30, 30))) for c in rgb) for _ in range(32 * 32)])
            img.save(root / "pics" / f"{kind}{i}.png")
            rows.append({"image": f"{kind}{i}.png", "kind": kind, "size": "small" if i % 2 else "large"})
    F.write_jsonl(root / "labels.jsonl", rows)
    torch.manual_seed(0)
    model = timm.create_model("test_convnext", pretrained=False, num_classes=3)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32), "pool_size": (1, 1), "crop_pct": 1.0}
    save_for_hf(model, root / "convnext", model_config={"label_names": list(SHADES)}, safe_serialization=True)
    return root


def vision_spec(method: str, train: str, data: str = "", eval_: str = "metric accuracy; gate accuracy >= 0.0 on test") -> str:
    labels = ", ".join(json.dumps(x) for x in VISION_LABELS)
    return spec(f'modality vision; base "convnext"; task image_classification; labels [{labels}]; params 300K', method,
                'sft { input "image"; target "kind" }',
                f'format image_table; source "labels.jsonl"; image_root "pics"; split 60/20/20; {data}', train, eval_)


def test_vision_applies_every_key_it_honours(tmp_path: Path, images: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.runtime.backends import vision, vision_loop
    from ftc.runtime.backends import vision_data as vd
    from ftc.runtime.backends import vision_model as vm

    seen = Seen("vision")
    shared = ("labels.jsonl", "pics", "convnext")
    root = project(tmp_path / "lora", images, *shared)
    lora = 'lora { rank 4; alpha 12; dropout 0.2; targets ["fc1"]; bias lora_only; merge true }'
    ctx = context(root, vision_spec(lora, f'{FULL_TRAIN}; augment ["flip", "rotate"]',
                                    'dedup exact; slice small where size == "small"',
                                    "metric f1 weighted; metric accuracy; gate accuracy >= 0.0 on test; latency_warmup 2"))
    spies = loop_spies(monkeypatch)
    got = attached(monkeypatch, vm, "attach")
    drops = dropouts_in_training(monkeypatch)
    found = spy(monkeypatch, vd, "load_images")
    fitted = vision.fit(ctx)
    events = events_of(ctx)
    lp = loop_applied(seen, spies, events)
    model = got[0].model
    cfg = got[0].peft["default"]
    seen("method.lora.rank", cfg.r == 4, f"peft r {cfg.r}")
    seen("method.lora.alpha", cfg.lora_alpha == 12, f"peft lora_alpha {cfg.lora_alpha}")
    lora_drops = {q for n, q in drops[-1].items() if "lora_dropout" in n}
    seen("method.lora.dropout", cfg.lora_dropout == 0.2 and lora_drops == {0.2}, f"LoRA dropout in training {lora_drops}")
    names = got[0].trainable
    adapted = {n.split(".lora_A")[0] for n in names if ".lora_A" in n}
    seen("method.lora.targets", adapted and all(n.endswith("mlp.fc1") for n in adapted), f"LoRA on {sorted(adapted)[:2]}...")
    seen("method.lora.bias", any(n.endswith("fc1.base_layer.bias") for n in names)
         and not any(n.endswith("fc2.bias") for n in names), "the biases of the LoRA layers (only) train")
    merged = fitted.result.merged_dir
    seen("method.lora.merge", merged is not None and (merged / "model.safetensors").is_file(), f"merged at {merged}")
    seen("train.gradient_checkpointing", all(st.grad_checkpointing for st in model.get_base_model().stages),
         "timm's grad_checkpointing in every stage")
    shown = repr(lp.transform)
    seen("train.augment", "RandomHorizontalFlip" in shown and "RandomRotation" in shown
         and "RandomHorizontalFlip" not in repr(lp.val_transform), "flips and rotations in training only")
    seen("model.base", artifact_base(fitted.result.model_dir) == str((root / "convnext").resolve()), "the timm folder")
    seen("model.task model.modality", type(model.get_base_model()).__name__ == "ConvNeXt", "a timm image classifier")
    rows, root_dir = found[0][0][1], found[0][0][2]
    seen("data.image_root", root_dir == (root / "pics").resolve(), f"images read below {root_dir}")
    seen("signal.sft.input signal.sft.target model.labels",
         lp.train_images.names == [r["image"] for r in rows]
         and lp.train_images.labels == [VISION_LABELS.index(r["kind"]) for r in rows],
         "images from `image`, classes from `kind`, numbered in the spec's label order")
    seen("data.dedup", dedup_applied(ctx), "the dedup node removes a repeated training image")
    smalls = sum(r["size"] == "small" for r in ctx.parts["test"].rows)
    evaluation_applied(seen, ctx, vision, {"f1": "f1.weighted", "accuracy": "accuracy"}, smalls, 2)
    # full fine-tunes: freeze/unfreeze patterns; progressive unfreezing over 3 epochs
    ctx = context(project(tmp_path / "full", images, *shared),
                  vision_spec('full { unfreeze ["stages.1", "head"]; freeze ["stages.1.downsample"] }',
                              "steps 1; precision fp32"))
    got = attached(monkeypatch, vm, "attach")
    vision.fit(ctx)
    names = got[0].trainable
    seen("method.full.unfreeze", names and all(n.startswith(("stages.1.", "head.")) for n in names),
         "only stage 1 and the head train")
    seen("method.full.freeze", not any(n.startswith("stages.1.downsample") for n in names)
         and any(n.startswith("stages.1.blocks") for n in names), "stage 1's downsampling stays frozen")
    ctx = context(project(tmp_path / "progressive", images, *shared),
                  vision_spec('full { progressive ["stages.3", "stages.2"]; unfreeze_every 2 }',
                              "epochs 3; batch_size 8; precision fp32"))
    spies = loop_spies(monkeypatch)
    per_epoch: dict[int, list[bool]] = {}  # epoch -> which groups train
    real = vision_loop.Loop._unfreeze

    def unfreeze(self: Any, epoch: int) -> None:
        real(self, epoch)
        per_epoch[epoch] = [all(p.requires_grad for p in g) for g in self.groups_to_unfreeze]

    monkeypatch.setattr(vision_loop.Loop, "_unfreeze", unfreeze)
    vision.fit(ctx)
    seen("method.full.progressive method.full.unfreeze_every",
         per_epoch == {0: [True, False], 1: [True, False], 2: [True, True]},
         f"stage 3 trains from epoch 0, stage 2 from epoch 2: {per_epoch}")
    epochs = sorted({c[0][2] for c in spies["perms"]})
    seen("train.epochs", epochs == [0, 1, 2], f"batches drawn for epochs {epochs}")
    seen.covers()


# ---------------------------------------------------------------------------------------------
# multimodal (open_clip)


@pytest.fixture(scope="module")
def icons(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pics/ (40 icons), pairs.jsonl (image, words, shade) and a tiny open_clip model over the captions."""
    from tests.runtime.test_multimodal import icon_rows, make_tiny_clip

    root = tmp_path_factory.mktemp("icons")
    (root / "pics").mkdir()
    pairs = icon_rows(40)
    for row, img in pairs:
        img.save(root / "pics" / row["image"])
    F.write_jsonl(root / "pairs.jsonl", [{"image": r["image"], "words": r["caption"], "shade": r["shade"]}
                                         for r, _ in pairs])
    make_tiny_clip(root / "clip", [r["caption"] for r, _ in pairs])
    return root


def clip_spec(method: str, train: str, data: str = "", eval_: str = "metric loss; gate loss <= 99 on test") -> str:
    return spec('modality multimodal; base "clip"; task image_text_contrastive; params 60K', method,
                'contrastive { image "image"; caption "words"; temperature 0.2 }',
                f'format image_table; source "pairs.jsonl"; image_root "pics"; split 70/15/15; {data}', train, eval_)


def test_multimodal_applies_every_key_it_honours(tmp_path: Path, icons: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.runtime.backends import multimodal
    from ftc.runtime.backends import multimodal_data as D
    from ftc.runtime.backends import multimodal_model as M

    seen = Seen("multimodal")
    shared = ("pairs.jsonl", "pics", "clip")
    root = project(tmp_path / "lora", icons, *shared)
    lora = 'lora { rank 4; alpha 12; dropout 0.2; targets ["c_fc"]; bias lora_only; merge true }'
    ctx = context(root, clip_spec(lora, FULL_TRAIN, 'dedup exact; slice dark where shade == "dark"',
                                  "metric recall_at_k 3; metric zero_shot_accuracy; gate recall_at_k >= 0.0 on test; "
                                  "latency_warmup 2"))
    spies = loop_spies(monkeypatch)
    got = attached(monkeypatch, M, "attach")
    drops = dropouts_in_training(monkeypatch)
    pairs = spy(monkeypatch, D, "split_pairs")
    losses = spy(monkeypatch, D, "batch_loss")
    fitted = multimodal.fit(ctx)
    lp = loop_applied(seen, spies, events_of(ctx))
    model, cfg, names = got[0].model, got[0].peft["default"], got[0].trainable
    seen("method.lora.rank", cfg.r == 4, f"peft r {cfg.r}")
    seen("method.lora.alpha", cfg.lora_alpha == 12, f"peft lora_alpha {cfg.lora_alpha}")
    lora_drops = {q for n, q in drops[-1].items() if "lora_dropout" in n}
    seen("method.lora.dropout", cfg.lora_dropout == 0.2 and lora_drops == {0.2}, f"LoRA dropout in training {lora_drops}")
    adapted = {n.split(".lora_A")[0] for n in names if ".lora_A" in n}
    seen("method.lora.targets", adapted and all(n.endswith("mlp.c_fc") for n in adapted)
         and any(n.startswith("base_model.model.visual.") for n in adapted), "LoRA on both towers' c_fc")
    seen("method.lora.bias", any(n.endswith("c_fc.base_layer.bias") for n in names)
         and not any(n.endswith("c_proj.bias") for n in names), "the biases of the LoRA layers (only) train")
    merged = fitted.result.merged_dir
    seen("method.lora.merge", merged is not None and (merged / "open_clip_model.safetensors").is_file(),
         f"merged at {merged}")
    inner = model.get_base_model()
    seen("train.gradient_checkpointing", inner.transformer.grad_checkpointing is True, "open_clip grad checkpointing")
    seen("model.task model.modality", type(inner).__name__ == "CLIP", "an open_clip model")
    adapter = json.loads((fitted.result.model_dir / "adapter_config.json").read_text(encoding="utf-8"))
    seen("model.base", adapter["base_model_name_or_path"] == str((root / "clip").resolve()), "the open_clip folder")
    train = pairs[0][2]
    rows = ctx.parts["train"].rows
    seen("signal.contrastive.image data.image_root", train.images == [(root / "pics" / r["image"]) for r in rows],
         "images from `image`, below pics/")
    seen("signal.contrastive.caption", [c for _, c in lp.items] == [r["words"] for r in rows], "captions from `words`")
    scale = float(inner.logit_scale.exp())
    seen("signal.contrastive.temperature", {c[0][4] for c in losses} == {0.2} and scale == pytest.approx(5.0)
         and not inner.logit_scale.requires_grad, "InfoNCE at 0.2; the logit scale frozen at 1/0.2")
    seen("data.dedup", dedup_applied(ctx), "the dedup node removes a repeated training pair")
    darks = sum(r["shade"] == "dark" for r in ctx.parts["test"].rows)
    evaluation_applied(seen, ctx, multimodal, {"recall_at_k": "recall_at_3", "zero_shot_accuracy": "zero_shot_accuracy"},
                       darks, 2)
    ctx = context(project(tmp_path / "full", icons, *shared),
                  clip_spec('full { unfreeze ["transformer.resblocks.1"]; freeze ["transformer.resblocks.1.mlp"] }',
                            "epochs 2; batch_size 8; precision fp32"))
    got = attached(monkeypatch, M, "attach")
    spies = loop_spies(monkeypatch)
    multimodal.fit(ctx)
    names = got[0].trainable
    seen("method.full.unfreeze", names and all(".resblocks.1." in f".{n}" for n in names), "only block 1 trains")
    seen("method.full.freeze", not any(".resblocks.1.mlp." in f".{n}" for n in names)
         and any(".resblocks.1.attn." in f".{n}" for n in names), "block 1's MLP stays frozen")
    epochs = sorted({c[0][2] for c in spies["perms"]})
    seen("train.epochs", epochs == [0, 1], f"batches drawn for epochs {epochs}")
    seen.covers()


# ---------------------------------------------------------------------------------------------
# The pipeline around every backend: data read and split, gates, the record, the time budget,
# the MLflow mirror


def test_pipeline_applies_its_keys(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.compiler.check import CheckOptions, check_file
    from ftc.compiler.plan import build_plan
    from ftc.runtime import api
    from ftc.runtime import gates as gate_eval
    from ftc.runtime.api import EvalResult
    from ftc.runtime.executor import backend_module
    from ftc.runtime.run import lineage
    from ftc.runtime.tracking import settings_for_run

    seen = Seen("pipeline")
    # one table under another extension and other column names, split by the compiler
    root = tmp_path / "split"
    root.mkdir()
    rows = [{"body": r["text"], "label": r["label"], "channel": r["channel"]} for r in ticket_rows(120, 1)]
    F.write_jsonl(root / "tickets.data", rows)
    model = f'modality text; base "{tiny_bert}"; task classification; labels ["billing", "bug", "account"]'
    data = 'format jsonl; source "tickets.data"; split 70/15/15; seed 5; stratify "label"; fields { text "body" }'
    tracking = ('tracking { mlflow "sqlite:///runs/mlflow.db"; experiment "keys-exp"; register "keys-model"; '
                'alias "best"; artifacts "runs/art" }')
    text_ = spec(model, "lora { rank 4 }", 'sft { input "text"; target "label" }', data,
                 "steps 6; batch_size 4; precision fp32; artifacts keep 3", "metric f1; gate f1 >= 0.45 on test",
                 extra=f"{tracking}\n  budget {{ max_time 3min }}")
    ctx = context(root, text_, allow=("FT203",))
    train = ctx.parts["train"].rows
    seen("data.fields", train and all("text" in r and "body" not in r for r in train), "rows renamed body -> text")
    ratios = (0.70, 0.15, 0.15)
    expected = stage_split(root / "tickets.data", {"text": "body"}, ratios, 5, "label")
    seen("data.source data.split data.seed data.stratify",
         train == expected and train != stage_split(root / "tickets.data", {"text": "body"}, ratios, 0, "label")
         and sorted(ctx.parts) == ["test", "train", "val"],
         f"training gets the seed-5 stratified 70% of the table ({len(train)} of {len(rows)} rows)")
    (root / "unformatted.ftspec").write_text(text_.replace("format jsonl; ", ""), encoding="utf-8")
    unformatted = check_file(root / "unformatted.ftspec", CheckOptions())
    seen("data.format", any(d.code == "FT200" for d in unformatted.diagnostics) and len(train) > 0,
         "tickets.data is read as jsonl because `format` says so (without it: FT200)")
    plan = build_plan(ctx.checked)
    gates = next(n for n in plan.nodes if n.kind == "gates").params["gates"]
    verdicts = [gate_eval.evaluate(gates, {"tuned:test": EvalResult("test", {"f1": f1})})[0].passed for f1 in (0.5, 0.4)]
    seen("eval.gates", verdicts == [True, False], "f1 0.5 passes `f1 >= 0.45 on test`, 0.4 fails it")
    seen("train.artifacts", lineage(plan, ctx.checked).artifacts_keep == 3,
         "the run's record keeps `artifacts keep 3` for `ftc gc`")
    mirror = settings_for_run(ctx.checked)
    assert mirror is not None, "the spec's tracking block was not read"
    seen("tracking.mlflow", mirror.uri == f"sqlite:///{(root / 'runs' / 'mlflow.db').resolve()}", f"mirrored to {mirror.uri}")
    seen("tracking.experiment", mirror.experiment == "keys-exp", "the MLflow experiment")
    seen("tracking.register", mirror.register == "keys-model", "the registered model's name")
    seen("tracking.alias", mirror.alias == "best", "the alias of the newest promoted version")
    seen("tracking.artifacts", mirror.artifacts == (root / "runs" / "art").resolve().as_posix(), "the artifact location")
    # max_time: a clock that advances a minute per reading; 3 minutes stop training before step 6
    ticks = iter(range(100_000))
    monkeypatch.setattr(api, "now", lambda: 60.0 * next(ticks))
    ctx.time_limit = api.TimeLimit.of(ctx.spec)
    run = text.fit_sft(ctx)
    stops = [e["step"] for e in events_of(ctx) if e.get("kind") == "max_time"]
    seen("budget.max_time", run.result.steps < 6 and stops == [run.result.steps],
         f"training stopped at step {run.result.steps} of 6 once 3 minutes were spent")
    # pre-split files; the backend by modality; the model class by task
    presplit = ticket_folder(tmp_path / "presplit")
    ctx = context(presplit, spec(model, "lora { rank 4 }", 'sft { input "body"; target "category" }', PRESPLIT,
                                 "steps 1; precision fp32", "metric f1; gate f1 >= 0.1 on test"))
    seen("data.train data.val data.test", [[r["body"] for r in ctx.parts[n].rows] for n in ("train", "val", "test")]
         == [[r["text"] for r in part] for _, part in TICKETS], "each split is its own file's rows")
    specs = {"text": ctx.spec, "vision": checked_spec(tmp_path / "vision", vision_spec("full { }", "epochs 1")),
             "multimodal": checked_spec(tmp_path / "clip", clip_spec("full { }", "epochs 1"))}
    backends = {m: backend_module(sp)[0].name for m, sp in specs.items()}
    seen("model.modality", backends == {"text": "text.sft", "vision": "vision", "multimodal": "multimodal"},
         f"the executor's backend by modality: {backends}")
    classifier, _ = loading.load_base(ctx)
    seen("model.task", type(classifier).__name__ == "BertForSequenceClassification"
         and loading.model_class("generation").__name__ == "AutoModelForCausalLM", "a classifier for classification")
    missing = sorted(h.PIPELINE - set(seen))
    assert not missing, f"pipeline keys no run observed applied: {missing}"


def checked_spec(folder: Path, text_: str) -> Any:
    """The spec of `text_`, checked without reading data (for what the executor dispatches on)."""
    from ftc.compiler.check import CheckOptions, check_file

    folder.mkdir()
    (folder / "spec.ftspec").write_text(text_, encoding="utf-8")
    result = check_file(folder / "spec.ftspec", CheckOptions(no_data=True))
    assert result.checked is not None
    return result.checked.spec
